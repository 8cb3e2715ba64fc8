//! Compiles the C tests (`tests/c/*.c`) against the installed headers, with
//! `-fexceptions` so a bug check unwinds through their frames, into static libraries that
//! only the integration tests link (`#[link]` there; the library itself stays free of
//! them). Header checks: C11 and C++17, `-Wall -Wextra -Werror`, with the WDK x64 layout
//! assertions.

fn main() {
    println!("cargo:rerun-if-changed=tests/c");
    println!("cargo:rerun-if-changed=include");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rustc-link-search=native={out}");
    cc::Build::new()
        .cargo_metadata(false)
        .file("tests/c/spinlock.c")
        .file("tests/c/dpc_list.c")
        .file("tests/c/interrupt.c")
        .file("tests/c/wdf.c")
        .file("tests/c/routines.c")
        .include("include")
        .flag("-std=c11")
        .flag("-fexceptions")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("ntspin_ddi_ctests");
    cc::Build::new()
        .cargo_metadata(false)
        .cpp(true)
        .file("tests/c/headers.cpp")
        .include("include")
        .flag("-std=c++17")
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .compile("ntspin_ddi_cxxcheck");
}
