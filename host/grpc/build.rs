//! Generates the weft.v1 messages, services and clients from proto/, plus
//! the encoded descriptor set served by gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=../../proto");
    tonic_prost_build::configure()
        .codec_path("crate::codec::WeftCodec")
        .file_descriptor_set_path(out.join("weft_v1_descriptor.bin"))
        .compile_protos(&["../../proto/weft/v1/weft.proto"], &["../../proto"])?;
    Ok(())
}
