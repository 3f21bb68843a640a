//! Converts a Hugging Face folder to GGUF through `convert::to_gguf`, until the `hearth convert` command
//! (another branch) calls it: `cargo run --release -p hearth-engine --example hf_to_gguf -- SRC DST OUTTYPE
//! [--force]`. tests/e2e/test_convert_llama_cpp.py uses it when the hearth binary has no `convert` yet.

use std::path::PathBuf;

use hearth_engine::convert::to_gguf::{hf_to_gguf, GgufOptions, OutType};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "--force");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if pos.len() != 3 {
        eprintln!(
            "usage: hf_to_gguf SRC DST OUTTYPE [--force]  (OUTTYPE: {})",
            OutType::NAMES
        );
        std::process::exit(2);
    }
    let Some(outtype) = OutType::from_name(pos[2]) else {
        eprintln!("unknown outtype {:?} (one of {})", pos[2], OutType::NAMES);
        std::process::exit(2);
    };
    let opts = GgufOptions {
        outtype,
        force,
        name: None,
    };
    let mut report = |done: u64, total: u64| {
        if done == total {
            eprintln!("{total} bytes of tensor data written");
        }
    };
    match hf_to_gguf(
        &PathBuf::from(pos[0]),
        &PathBuf::from(pos[1]),
        &opts,
        &mut report,
    ) {
        Ok(p) => println!("{}", p.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
