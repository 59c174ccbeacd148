//! Evaluation and text generation on the CPU executor: MQAR accuracy ([`mqar`]), perplexity of a text file
//! ([`ppl`]) and sampling for incremental decoding ([`sample`]).

pub mod mqar;
pub mod ppl;
pub mod sample;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use tokenizers::Tokenizer;

/// The `tokenizer.json` (Hugging Face `tokenizers` format) of a checkpoint folder.
pub fn load_tokenizer(ckpt: &Path) -> Result<Tokenizer> {
    let path = ckpt.join("tokenizer.json");
    if !path.is_file() {
        return Err(anyhow!(
            "{}: not found; this command needs the checkpoint's tokenizer (a Hugging Face `tokenizers` \
             tokenizer.json next to config.json)",
            path.display()
        ));
    }
    Tokenizer::from_file(&path)
        .map_err(|e| anyhow!("{}: cannot load the tokenizer: {e}", path.display()))
}

/// A progress bar on stderr (drawn only when stderr is a terminal and `show` is set).
pub fn progress_bar(len: u64, unit: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
