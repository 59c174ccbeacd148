//! Golden dumps of built graphs: the text form is deterministic, and changes only through `CHEEMS_BLESS=1`
//! (which rewrites `tests/golden/*.txt`, to be reviewed as a diff).

mod common;

use cheems::model::build::{build_with, BuildOptions};
use cheems::model::checkpoint::Checkpoint;
use common::fixtures_dir;
use std::path::Path;

fn check(case: &str, opts: BuildOptions, golden: &str) {
    let ck = Checkpoint::open(&fixtures_dir().join(case)).unwrap();
    let dump = build_with(&ck.config, &ck.weights, opts).unwrap().graph.dump().unwrap();
    let path = Path::new("tests/golden").join(golden);
    if std::env::var_os("CHEEMS_BLESS").is_some() {
        std::fs::write(&path, &dump).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with CHEEMS_BLESS=1)", path.display()));
    if dump != want {
        let line = dump.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "{}: dump differs at line {}:\n  got:  {}\n  want: {}",
            path.display(),
            line + 1,
            dump.lines().nth(line).unwrap_or(""),
            want.lines().nth(line).unwrap_or("")
        );
    }
}

#[test]
fn cheems_v1_cdmoe_session_form() {
    check("cheems-v1-cdmoe", BuildOptions::default(), "cheems-v1-cdmoe.txt");
}

#[test]
fn hf_doge_cdmoe_export_form() {
    check("hf-doge-cdmoe", BuildOptions { stateless: true }, "hf-doge-cdmoe.stateless.txt");
}

#[test]
fn doge_ifa_session_form() {
    check("doge-ifa-cdmoe", BuildOptions::default(), "doge-ifa-cdmoe.txt");
}
