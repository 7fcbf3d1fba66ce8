//! What a newcomer meets first, through the real binary: the README's command block is the
//! commands' own definition; results on stdout and progress on stderr whatever the terminal;
//! `-q` and `-v`; one JSON style; `status` exit codes; the renamed `--allow-unsafe-locality`;
//! `down --skip`; completions.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use clap::CommandFactory;
use serde_json::Value;

use crate::support::{describe, Meshstack, Moto};

const AWS_ONLY: &str = "network,nat,iam,cluster,nodegroup,karpenter-infra";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A row of the result table: `  <stage>  <state> ...`.
fn has_row(text: &str, stage: &str, state: &str) -> bool {
    text.lines().any(|l| {
        let mut words = l.split_whitespace();
        l.starts_with("  ") && words.next() == Some(stage) && words.next() == Some(state)
    })
}

fn stack(ms: &Meshstack, name: &str) -> String {
    let yaml = format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n");
    ms.stack_file(&format!("{name}.yaml"), &yaml)
        .to_str()
        .unwrap()
        .to_string()
}

/// The commands and their long flags, as the README's command block lists them: the words
/// after `meshstack` up to the first flag or placeholder name the command.
fn readme_commands() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme.find("## Commands").expect("a Commands section");
    let block = &readme[start..];
    let block = &block[block.find("```\n").unwrap() + 4..];
    let block = &block[..block.find("```").unwrap()];
    let mut commands: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("meshstack"), "{line}");
        let mut path = Vec::new();
        let mut flags = BTreeSet::new();
        let mut in_path = true;
        for word in words {
            let bare = word.trim_start_matches(['[', '(']);
            if in_path
                && bare
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
                && !bare.starts_with('-')
                && !bare.contains('|')
            {
                path.push(bare.to_string());
                continue;
            }
            in_path = false;
            for part in bare.split('|') {
                if let Some(flag) = part.strip_prefix("--") {
                    let flag: String = flag
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    flags.insert(flag);
                }
            }
        }
        commands.entry(path.join(" ")).or_default().extend(flags);
    }
    commands
}

/// Every visible command with its visible long flags, from the definitions `--help` prints.
fn defined_commands() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(
        cmd: &clap::Command,
        path: &mut Vec<String>,
        out: &mut BTreeMap<String, BTreeSet<String>>,
    ) {
        let flags = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| l != "help" && l != "version")
            .collect();
        out.insert(path.join(" "), flags);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            path.push(sub.get_name().to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut cmd = meshstack::cli::Cli::command();
    cmd.build();
    let mut out = BTreeMap::new();
    walk(&cmd, &mut Vec::new(), &mut out);
    // The top level shows the global flags.
    let global: BTreeSet<String> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set() && !a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    out.insert(String::new(), global);
    // A group such as `state` is documented through its subcommands.
    out.retain(|name, flags| {
        !(flags.is_empty()
            && cmd
                .get_subcommands()
                .any(|s| s.get_name() == name && s.has_subcommands()))
    });
    out
}

#[test]
fn the_readme_command_block_is_what_help_shows() {
    let readme = readme_commands();
    let defined = defined_commands();
    let names = |m: &BTreeMap<String, BTreeSet<String>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&readme),
        names(&defined),
        "commands in the README vs. defined"
    );
    for (name, flags) in &defined {
        // `completions SHELL` takes only its positional argument.
        assert_eq!(
            &readme[name], flags,
            "`meshstack {name}`: README flags vs. defined"
        );
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let ms = Meshstack::new(None);
    for shell in ["bash", "zsh", "fish"] {
        let out = ms.run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", describe(&out));
        let text = stdout(&out);
        assert!(
            text.contains("allow-unsafe-locality") && text.contains("force-unlock"),
            "{shell}: {text}"
        );
    }
    let out = ms.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// The result on stdout, progress and the API-call summary on stderr, with no terminal; `-q`
/// keeps only the result; `status` says with its exit code whether `up` has work to do; the
/// old `--force` still works and says it is going away; `down --skip` keeps what it skips.
#[test]
fn results_go_to_stdout_and_progress_to_stderr() {
    let moto = Moto::start();
    let ms = Meshstack::with_moto(&moto);
    let stack = stack(&ms, "streams");

    let out = ms.run(&["up", "--stack", &stack, "--only", "network,iam", "--force"]);
    assert!(out.status.success(), "{}", describe(&out));
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        o.contains("meshstack up finished in") && has_row(&o, "network", "changed"),
        "the result is on stdout: {}",
        describe(&out)
    );
    assert!(
        !o.contains("[network] started") && !o.contains("AWS API calls"),
        "stdout holds only the result: {}",
        describe(&out)
    );
    assert!(
        e.contains("[network] started") && e.contains("AWS API calls:"),
        "progress and the API-call summary are on stderr: {}",
        describe(&out)
    );
    assert!(
        e.contains("--force is now --allow-unsafe-locality"),
        "{}",
        describe(&out)
    );

    // Not converged: the other stages are pending.
    let out = ms.run(&["status", "--stack", &stack]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));

    let out = ms.run(&["-q", "up", "--stack", &stack, "--only", AWS_ONLY]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !stderr(&out).contains("started"),
        "-q: no progress: {}",
        describe(&out)
    );
    assert!(
        has_row(&stdout(&out), "cluster", "changed"),
        "-q keeps the result: {}",
        describe(&out)
    );

    // -vv: the SDK's own debug lines, on stderr only.
    let out = ms.run(&["-vv", "plan", "--stack", &stack, "--only", "network"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("DEBUG"),
        "-vv shows debug lines: {}",
        describe(&out)
    );
    assert!(!stdout(&out).contains("DEBUG"), "{}", describe(&out));

    // Everything but the network: the network stays, in moto and in the journal.
    let out = ms.run(&[
        "down", "--yes", "--stack", &stack, "--skip", "network", "-o", "json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let summary: Value = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["event"] == "summary")
        .unwrap();
    let ran: Vec<&str> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["stage"].as_str().unwrap())
        .collect();
    assert!(
        !ran.contains(&"network") && ran.contains(&"cluster"),
        "{ran:?}"
    );
    let out = ms.run(&["status", "--stack", &stack, "-o", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let network = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stage"] == "network")
        .unwrap();
    assert_eq!(network["state"], "done", "{status}");

    // A `--skip` that leaves the network selected while the rest is up would be refused; here
    // nothing depends on it any more, so it goes.
    let out = ms.run(&["down", "--yes", "--stack", &stack]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// `-o json` everywhere it exists prints one compact document per line.
#[test]
fn every_json_output_is_one_compact_document() {
    let ms = Meshstack::new(None);
    let out_dir = ms.dir.path().join("rendered");
    let runs: Vec<Vec<String>> = vec![
        vec![
            "plan".into(),
            "--offline".into(),
            "-o".into(),
            "json".into(),
        ],
        vec![
            "render".into(),
            "--out".into(),
            out_dir.to_str().unwrap().into(),
            "-o".into(),
            "json".into(),
        ],
        vec!["doctor".into(), "-o".into(), "json".into()],
    ];
    for args in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ms.run(&args);
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", describe(&out));
        let doc: Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", describe(&out)));
        match args[0] {
            "render" => {
                let files = doc["files"].as_array().unwrap();
                assert!(files.len() > 10, "{doc}");
                for f in files {
                    assert!(std::path::Path::new(f.as_str().unwrap()).is_file(), "{f}");
                }
                assert!(!doc["stand_ins"].as_array().unwrap().is_empty(), "{doc}");
            }
            "doctor" => {
                // No credentials here: the check fails, and says so in the document.
                assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
                assert_eq!(doc["ok"], false, "{doc}");
                let creds = doc["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["check"] == "credentials")
                    .unwrap_or_else(|| panic!("{doc}"));
                assert_eq!(creds["ok"], false, "{doc}");
            }
            _ => assert!(out.status.success(), "{}", describe(&out)),
        }
    }
}
