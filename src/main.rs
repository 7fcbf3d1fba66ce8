//! meshstack: one command from an empty AWS account to a working demo of Istio locality load
//! balancing combined with Kubernetes `internalTrafficPolicy: Local`.
//!
//! Exit codes: 0 success, 1 a stage (or an AWS call) failed, 2 bad input — the stack file,
//! flags, account guard, zones or quotas — reported before any mutating API call, 3 from
//! `status` when the stack is not converged, 130 interrupted (143 on SIGTERM, 129 on SIGHUP).

use std::process::ExitCode;

use meshstack::{cli, commands};

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging(cli.verbose);
    commands::set_quiet(cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            // An error may quote an answer or a request: the same redaction as the logs.
            eprintln!("error: {}", meshstack::redact::redact(&format!("{err:#}")));
            if err.downcast_ref::<commands::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// -v and up: the libraries' own tracing (the AWS SDK's requests and retries, kube's) on stderr,
/// every event through [`meshstack::redact`] (the SDK's own redaction misses secrets).
fn logging(verbose: u8) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match verbose {
        0 => return,
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(meshstack::redact::RedactingStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    use cli::Command;
    match cli.command {
        Command::Plan(args) => commands::plan(args).await,
        Command::Up(args) => commands::up(args).await,
        Command::Down(args) => commands::down(args).await,
        Command::Status(args) => commands::status(args).await,
        Command::Doctor(args) => commands::doctor(args).await,
        Command::Token(args) => commands::token(args).await,
        Command::Kubeconfig(args) => commands::kubeconfig(args).await,
        Command::Render(args) => commands::render(args).await,
        Command::Pods(args) => commands::pods(args).await,
        Command::Verify(args) => commands::verify(args).await,
        Command::Demo(args) => commands::demo(args).await,
        Command::Reap(args) => commands::reap(args).await,
        Command::Fleet(cmd) => {
            use cli::FleetCommand;
            match cmd {
                FleetCommand::Plan(args) => commands::fleet_plan(args).await,
                FleetCommand::Up(args) => commands::fleet_up(args).await,
                FleetCommand::Down(args) => commands::fleet_down(args).await,
                FleetCommand::Status(args) => commands::fleet_status(args).await,
                FleetCommand::Handout(args) => commands::fleet_handout(args).await,
            }
        }
        Command::Charts(cli::ChartsCommand::Mirror(args)) => commands::charts_mirror(args).await,
        Command::State(cmd) => {
            use cli::StateCommand;
            match cmd {
                StateCommand::Init(args) => commands::state_init(args).await,
                StateCommand::Show(args) => commands::state_show(args).await,
                StateCommand::Pull(args) => commands::state_pull(args).await,
                StateCommand::Push(args) => commands::state_push(args).await,
                StateCommand::Migrate(args) => commands::state_migrate(args).await,
            }
        }
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut command = cli::Cli::command();
            clap_complete::generate(
                args.shell,
                &mut command,
                "meshstack",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
