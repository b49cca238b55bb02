//! The tour: every section of the module outline, in order, each under a
//! heading. This is the README's "see it work" command.
//!
//! Run: `cargo run --release --example outline`
//!
//! Each section prints what its own example prints; see the `//!` header of
//! each file in `examples/`.

#[path = "lock.rs"]
mod lock;

/// One section's entry point.
type Section = fn() -> Result<(), Box<dyn std::error::Error>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Children re-executed by a section run their role and stop here.
    if lock::child_role() {
        return Ok(());
    }
    let sections: [(&str, Section); 1] = [("Controlling access with Lock", lock::main)];
    for (i, (title, run)) in sections.iter().enumerate() {
        println!("\n== {}. {title} ==", i + 1);
        run()?;
    }
    Ok(())
}
