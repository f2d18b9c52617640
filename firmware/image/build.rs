//! With the `defmt` feature, link defmt's linker script (it places the interned format strings
//! in the non-allocated `.defmt` section that `defmt-print` reads).
//!
//! defmt.x is written for microcontroller images whose memory layout comes from another `-T`
//! script. On the host the default layout must stay in force, so a copy of defmt.x with
//! `INSERT AFTER .comment` is used: it adds the `.defmt` section to the default layout instead of
//! replacing it.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_DEFMT").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let script = r#"
EXTERN(_defmt_acquire);
EXTERN(_defmt_release);
EXTERN(__defmt_default_timestamp);
EXTERN(__DEFMT_MARKER_TIMESTAMP_WAS_DEFINED);
PROVIDE(_defmt_timestamp = __defmt_default_timestamp);
PROVIDE(_defmt_panic = __defmt_default_panic);
SECTIONS
{
  .defmt 1 (INFO) :
  {
    . = 1;
    *(.defmt.prim.*);
    __DEFMT_MARKER_TRACE_START = .;
    *(.defmt.trace.*);
    __DEFMT_MARKER_TRACE_END = .;
    __DEFMT_MARKER_DEBUG_START = .;
    *(.defmt.debug.*);
    __DEFMT_MARKER_DEBUG_END = .;
    __DEFMT_MARKER_INFO_START = .;
    *(.defmt.info.*);
    __DEFMT_MARKER_INFO_END = .;
    __DEFMT_MARKER_WARN_START = .;
    *(.defmt.warn.*);
    __DEFMT_MARKER_WARN_END = .;
    __DEFMT_MARKER_ERROR_START = .;
    *(.defmt.error.*);
    __DEFMT_MARKER_ERROR_END = .;
    *(.defmt.*);
    __DEFMT_MARKER_END = .;
    KEEP(*(.defmt.end .defmt.end.*));
  }
}
INSERT AFTER .comment;
"#;
    std::fs::write(out.join("defmt-host.x"), script).expect("write linker script");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tdefmt-host.x");
}
