//! Generates the Rust types of `proto/kalla.proto` with prost, compiling the proto file with
//! protox (pure Rust: no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/kalla.proto");
    let descriptors = protox::compile(["kalla.proto"], ["../../proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
