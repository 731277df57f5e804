//! `hearth-hardware [--json]`: what Hearth detects on this machine.

fn main() {
    let json = std::env::args().skip(1).any(|arg| arg == "--json");
    let report = hearth_hardware::detect_local();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("could not write JSON: {error}");
                std::process::exit(1);
            }
        }
    } else {
        print!("{}", hearth_hardware::render_table(&report));
    }
}
