//! `sqlx::migrate!` embeds `migrations/` at compile time, but cargo does not know that
//! folder is an input: without this, a new migration file (with no change under
//! `shared/src`) would leave a cached build embedding the old set.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
