//! `corqd`: the corq server.
fn main() {
    println!("corqd {}", corq::VERSION);
}
