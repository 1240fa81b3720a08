//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, editing a migration
//! would not rebuild the crate and the old text would stay embedded.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
