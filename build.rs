//! Records the git commit the binary is built from as `CHEEMS_GIT_COMMIT` (compiled artifacts carry it), when
//! the source tree is a git checkout and git is installed.

fn main() {
    let head = std::path::Path::new(".git/HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        if let Ok(text) = std::fs::read_to_string(head) {
            if let Some(r) = text.strip_prefix("ref: ") {
                let path = format!(".git/{}", r.trim());
                if std::path::Path::new(&path).is_file() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
    }
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output();
    if let Ok(o) = out {
        let commit = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())
        {
            println!("cargo:rustc-env=CHEEMS_GIT_COMMIT={commit}");
        }
    }
}
