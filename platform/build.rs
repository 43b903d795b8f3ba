//! Builds the small C shim that routes ALSA's own error messages into the
//! log (see `src/alsa_quiet.c`); libasound itself is linked by alsa-sys.

fn main() {
    println!("cargo:rerun-if-changed=src/alsa_quiet.c");
    cc::Build::new()
        .file("src/alsa_quiet.c")
        .warnings(true)
        .compile("seer_alsa_quiet");
}
