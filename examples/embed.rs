//! Embedding corq: run the server on a thread of your program, use it, stop it.
use corq::client::{Consumer, Producer};
use std::time::Duration;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = std::env::temp_dir().join(format!("corq-embed-{}", std::process::id()));
    // The embedding: bind, run on a thread of ours, and (below) stop it from here.
    let server = corq::Server::bind(corq::Options::local(&data).validate()?)?;
    let (addr, handle) = (server.tcp_addr(), server.handle());
    let thread = std::thread::spawn(move || server.run());

    Producer::connect(addr)?.publish("greetings", b"hello from an embedded corq")?;
    let mut consumer = Consumer::connect(addr, "greetings", "printer")?;
    consumer.rdy(1)?;
    let msg = consumer
        .next_message(Duration::from_secs(5))?
        .ok_or("no message")?;
    println!("{}", String::from_utf8_lossy(&msg.body));
    consumer.fin(&msg.id)?;

    handle.shutdown();
    thread.join().map_err(|_| "server thread panicked")??;
    std::fs::remove_dir_all(data)?;
    Ok(())
}
