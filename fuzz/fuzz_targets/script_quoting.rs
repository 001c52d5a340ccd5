//! Any string substituted into `shell.run`'s `script:`, in each place a `${{ }}` may stand (a
//! bare word, inside '…', inside "…", next to other text): the rendered script, run by `sh -c`,
//! must print the value back byte for byte, or the value is refused. Never a second command.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ripcord::expr::parse_template;
use ripcord::runbook::Span;

/// Scripts that print `v` between `<` and `>`: the expected output is `<` + v + `>`.
const SCRIPTS: &[&str] = &[
    "printf '<%s>' ${{ inputs.v }}",
    "printf '<%s>' '${{ inputs.v }}'",
    "printf '<%s>' \"${{ inputs.v }}\"",
    "printf '%s' <${{ inputs.v }}>",
    "printf '%s' \"<\"${{ inputs.v }}'>'",
    "x=${{ inputs.v }}; printf '<%s>' \"$x\"",
    "printf '<%s' ${{ inputs.v }}; printf '>'",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, value)) = data.split_first() else { return };
    let Ok(value) = std::str::from_utf8(value) else { return };
    let mut script = SCRIPTS[which as usize % SCRIPTS.len()].to_string();
    // `printf '%s' <v>` must be read as text, not a redirection: quote the brackets.
    if script.contains(" <${{") {
        script = script.replace(" <${{ inputs.v }}>", " '<'${{ inputs.v }}'>'");
    }
    let template = parse_template(&script, Span::new(0, script.len()), &script)
        .expect("the scripts above are valid templates");
    let env = ripcord::expr::render::environment();
    let ctx = minijinja::context! {
        inputs => minijinja::Value::from(minijinja::value::Serde(serde_json::json!({ "v": value }))),
    };
    let rendered = match ripcord::expr::render::render_script(&env, &template, &ctx) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => panic!("a script renders to a string, not {other}"),
        Err(_) => return, // refused (a NUL byte): safe
    };
    let out = std::process::Command::new("sh")
        .args(["-c", &rendered])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("sh runs");
    let expected = format!("<{value}>");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "script {script:?} rendered as {rendered:?} printed something else (stderr {:?})",
        String::from_utf8_lossy(&out.stderr)
    );
});
