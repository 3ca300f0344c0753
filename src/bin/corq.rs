//! `corq`: corq's toolbox.
fn main() {
    println!("corq {}", corq::VERSION);
}
