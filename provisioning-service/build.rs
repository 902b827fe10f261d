//! Rebuilds when a migration is added or changed: `sqlx::migrate!` embeds the directory at
//! compile time, and cargo does not know it reads it (as sqlx's documentation advises).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
