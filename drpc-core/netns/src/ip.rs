//! Runs the `ip` command.

use std::process::Command;

use crate::NetnsError;

/// Runs `ip ARGS…`; its stdout on success.
pub(crate) fn run(args: &[&str]) -> Result<String, NetnsError> {
    let fail = |detail: String| NetnsError::Command {
        args: args.join(" "),
        detail,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
