//! What Hearth's command-line programs (`hearth-node`, `hearth-models`, `hearth-pool`) share:
//! a mistake in the command line is a [`UsageError`], told in one line and exit status 2;
//! any other failure is one line and status 1, with its backtrace only when `RUST_BACKTRACE`
//! asks for one.

use std::fmt;
use std::process::ExitCode;

/// A mistake in the command line (unknown command, missing or unexpected argument), as
/// opposed to a failure while doing what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as an `anyhow::Error`, for `return Err(usage(...))`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The usage error for `word`, which is none of `commands`: names it, and the nearest command
/// when one is close (a typo).
pub fn unknown_command(word: &str, commands: &[&str]) -> anyhow::Error {
    match nearest(word, commands) {
        Some(near) => usage(format!("unknown command {word:?} (did you mean {near:?}?)")),
        None => usage(format!(
            "unknown command {word:?}; the commands are {}",
            commands.join(", ")
        )),
    }
}

/// The command in `commands` closest to `word`: one it starts, or within two edits of it.
pub fn nearest<'a>(word: &str, commands: &[&'a str]) -> Option<&'a str> {
    if word.is_empty() {
        return None;
    }
    commands
        .iter()
        .map(|&c| {
            (
                c,
                if c.starts_with(word) {
                    0
                } else {
                    edits(word, c)
                },
            )
        })
        .filter(|&(_, d)| d <= 2)
        .min_by_key(|&(_, d)| d)
        .map(|(c, _)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions).
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Remove `--name VALUE` from `args` and return VALUE (`None` when absent); a usage error
/// when the option is last, with no value.
pub fn take_option(args: &mut Vec<String>, name: &str) -> anyhow::Result<Option<String>> {
    let Some(at) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    if at + 1 >= args.len() {
        return Err(usage(format!("{name} needs a value")));
    }
    let value = args.remove(at + 1);
    args.remove(at);
    Ok(Some(value))
}

/// Remove every `name` flag from `args`; whether there was one.
pub fn take_flag(args: &mut Vec<String>, name: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != name);
    args.len() != before
}

/// Print `error` for `program` on standard error and give the exit status: 2 and a pointer to
/// `help` for a [`UsageError`], else 1 with the error and its causes on one line (the
/// backtrace too when `RUST_BACKTRACE` is set).
pub fn report(program: &str, error: &anyhow::Error) -> ExitCode {
    if let Some(usage) = error.downcast_ref::<UsageError>() {
        eprintln!("{program}: {usage}; `{program} help` lists the commands");
        return ExitCode::from(2);
    }
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| !v.is_empty() && v != "0");
    if backtrace {
        eprintln!("{program}: {error:?}");
    } else {
        eprintln!("{program}: {}", error_chain(error.as_ref()));
    }
    ExitCode::FAILURE
}

/// An error and its causes in one line, each cause once: many errors already say their
/// cause in their own words, and printing the chain as well would say it twice.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` cut to at most `max` characters (on a character boundary), with an ellipsis when
/// cut: a reason that must fit a menu line or a notice.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_shortened_on_a_character_boundary() {
        assert_eq!(shorten("ümlaut", 3), "üml…");
        assert_eq!(shorten("short", 60), "short");
    }

    const COMMANDS: &[&str] = &["run", "status", "pause", "resume", "ledger"];

    #[test]
    fn options_and_flags_are_taken_out_of_the_arguments() {
        let mut args: Vec<String> = ["serve", "--config", "pool.toml", "--json", "x"]
            .map(String::from)
            .to_vec();
        assert!(take_flag(&mut args, "--json"));
        assert!(!take_flag(&mut args, "--json"));
        assert_eq!(
            take_option(&mut args, "--config").unwrap().as_deref(),
            Some("pool.toml")
        );
        assert_eq!(args, ["serve", "x"]);
        assert_eq!(take_option(&mut args, "--config").unwrap(), None);
        args.push("--port".into());
        let missing = take_option(&mut args, "--port").unwrap_err();
        assert!(missing.downcast_ref::<UsageError>().is_some());
        assert_eq!(missing.to_string(), "--port needs a value");
    }

    #[test]
    fn a_typo_gets_the_nearest_command_and_nonsense_gets_the_list() {
        assert_eq!(nearest("paus", COMMANDS), Some("pause"));
        assert_eq!(nearest("stauts", COMMANDS), Some("status"));
        assert_eq!(nearest("led", COMMANDS), Some("ledger"));
        assert_eq!(nearest("frobnicate", COMMANDS), None);
        assert_eq!(
            unknown_command("paus", COMMANDS).to_string(),
            "unknown command \"paus\" (did you mean \"pause\"?)"
        );
        assert_eq!(
            unknown_command("xyzzy", COMMANDS).to_string(),
            "unknown command \"xyzzy\"; the commands are run, status, pause, resume, ledger"
        );
    }

    #[test]
    fn usage_errors_exit_2_and_failures_exit_1() {
        assert_eq!(report("t", &usage("no command given")), ExitCode::from(2));
        assert_eq!(
            report("t", &anyhow::anyhow!("disk full")),
            ExitCode::FAILURE
        );
        assert!(edits("kitten", "sitting") == 3 && edits("", "ab") == 2);
    }
}
