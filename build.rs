//! Compiles the Teleport proto subset with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/teleport/legacy/client/proto/authservice.proto",
        "proto/teleport/legacy/types/types.proto",
        "proto/teleport/legacy/types/wrappers/wrappers.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        // The server side is compiled too: the test double implements it.
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
