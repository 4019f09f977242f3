//! `entra-pg`: command-line companion of entra-pool (commands arrive with the CLI issue).

fn main() {
    eprintln!("entra-pg: no commands yet; see README.md");
    std::process::exit(2);
}
