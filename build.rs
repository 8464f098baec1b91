//! Compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler) feeding prost-build,
//! so building mprelay never needs a `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/mprelay/v1/mprelay.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        .compile_fds(fds)?;
    Ok(())
}
