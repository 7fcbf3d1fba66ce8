//! The command line: clap definitions only; `commands` does the work.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::config::{Lifetime, StateLocation};

/// meshstack: from an empty AWS account to a working demo of Istio locality load balancing
/// with Kubernetes `internalTrafficPolicy: Local`, in dependency-ordered, resumable stages.
#[derive(Debug, Parser)]
#[command(name = "meshstack", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More detail on stderr: -v logs meshstack's own steps, -vv every AWS and Kubernetes
    /// request, -vvv everything the libraries trace. Secrets (tokens, keys, signatures) are
    /// redacted at every level.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less on stderr: no progress lines, only warnings and errors; results still go to stdout.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what `up` (or, with --destroy, `down`) would create, update or delete. Works without AWS
    /// credentials: it then plans against an empty account.
    Plan(PlanArgs),
    /// Create or repair the environment, stage by stage.
    Up(RunArgs),
    /// Delete everything the stack created, in reverse order.
    Down(DownArgs),
    /// Each stage's state (done, pending, failed, drifted) from the journal and a quick look;
    /// how long the stack has been up and what it has cost so far. Exit 0 when every stage is
    /// done, 1 when one failed, 3 when one is pending, interrupted or drifted (`up` would
    /// change something).
    Status(StatusArgs),
    /// Check credentials, region and the tools later stages need.
    Doctor(DoctorArgs),
    /// Print an EKS bearer token as a kubectl ExecCredential (the credential plugin that
    /// `kubeconfig` sets up). Needs AWS credentials, no network.
    Token(TokenArgs),
    /// Add (or refresh) a context for the stack's cluster in your kubeconfig, authenticating
    /// through `meshstack token`; other contexts are kept.
    Kubeconfig(KubeconfigArgs),
    /// Write every Kubernetes manifest and helm values file `up` would apply, with the stack's
    /// values filled in. Offline: account and endpoint are placeholders unless given.
    Render(RenderArgs),
    /// Where the app's pods run: zone -> node -> pods, marking any node where a products client
    /// has no Ready products pod (its calls are dropped under internalTrafficPolicy: Local).
    /// --html draws it.
    Pods(PodsArgs),
    /// Measure how much orders traffic stays in its zone and products traffic on its node, from
    /// the sidecars' own counters and the app's answers; exit 1 when the stack's thresholds are
    /// not met. --html draws it.
    Verify(VerifyArgs),
    /// Show the pattern to a room: the locality policies off, traffic measured; on again as
    /// `up` applies them, measured again; then both side by side with the cross-zone GB and
    /// what they cost a month. Ends (also on Ctrl-C) with the policies on, as `up` left them.
    /// With --before-dump/--after-dump, the same report from saved /clusters dumps, offline.
    /// Exit 1 when the after phase misses the stack's verify thresholds.
    Demo(DemoArgs),
    /// The stack's state (journal and lock): create an S3 bucket for shared state, read the
    /// state, replace it, move it between the local folder and S3.
    #[command(subcommand)]
    State(StateCommand),
    /// Many environments of one stack file at once, for a workshop: `<stack>-01` … `-N` (or
    /// `--names`), each an ordinary stack with its own journal and lock; quotas checked
    /// first; a handout for the attendees.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// List the stacks in the account whose `meshstack.io/expires-at` has passed (found by
    /// tag, no stack file or journal needed); with --yes, tear each down.
    Reap(ReapArgs),
    /// Chart archives: `mirror` copies the charts a stack installs into a folder any static
    /// web server serves as a helm repository.
    #[command(subcommand)]
    Charts(ChartsCommand),
    /// Print a shell completion script: `meshstack completions bash > /etc/bash_completion.d/meshstack`,
    /// or for zsh, fish, elvish, powershell.
    Completions(CompletionsArgs),
}

#[derive(Debug, Subcommand)]
pub enum ChartsCommand {
    /// Pull every chart the stack installs (with --every-pinned-version, every chart version
    /// meshstack pins) into DIR, each checked against its pinned digest as `up` checks it, and
    /// write DIR/index.yaml (`helm repo index`). Serve DIR with any static web server and point
    /// `charts.mirror` or MESHSTACK_CHART_MIRROR at it. Archives already there with their
    /// pinned digest are kept. Exit 1 when a chart could not be mirrored.
    Mirror(ChartsMirrorArgs),
}

#[derive(Debug, Args)]
pub struct ChartsMirrorArgs {
    /// The folder (made if missing, mode 0755; it must not be writable by other users).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Stack file, for its chart versions, repositories and digests.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// Every chart version meshstack pins (both Istio lines, both Karpenter releases, …), not
    /// only the stack's.
    #[arg(long)]
    pub every_pinned_version: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// What `fleet up` would build in each environment, whether it fits the quotas of each
    /// account and region, and what it costs per hour and per day.
    Plan(FleetPlanArgs),
    /// Create or repair every environment, --parallel at a time; one failing never stops the
    /// others, and running it again continues the unfinished ones.
    Up(FleetUpArgs),
    /// Tear down every environment of the fleet, in parallel, also those whose journal is
    /// gone (found by tag).
    Down(FleetDownArgs),
    /// Each environment's state, uptime, cost so far and expiry.
    Status(FleetStatusArgs),
    /// Write a kubeconfig per environment and one page (index.html, README.md) listing every
    /// environment, for the attendees.
    Handout(FleetHandoutArgs),
}

/// Which fleet: the stack file and its environments.
#[derive(Debug, Args, Clone)]
#[command(group(ArgGroup::new("members").required(true).args(["count", "names"])))]
pub struct FleetArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// N environments, named `<stack>-1` … `-N`, zero-padded to the width of N.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// Environments `<stack>-A`, `<stack>-B`, ... (comma-separated suffixes).
    #[arg(long, value_name = "A,B,C")]
    pub names: Option<String>,
    /// At most K environments at once (`status` reads only the journals, one after another).
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// A YAML list of IAM role ARNs (each optionally with `external_id`): environment i is
    /// built in the account of entry i, through STS AssumeRole from your credentials.
    #[arg(long, value_name = "FILE")]
    pub accounts: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FleetPlanArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Show the expiry `fleet up --expires-in` would set.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    pub expires_in: Option<Lifetime>,
    /// Report quotas that do not fit as a warning instead of exit code 2.
    #[arg(long)]
    pub ignore_quotas: bool,
    /// Price table to estimate with (the format of prices/aws.yaml). Default: the built-in one.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FleetUpArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Tag every resource with `meshstack.io/expires-at` = now + DURATION (8h, 90m, 2d), fixed
    /// when each environment is created; `meshstack reap` removes it after that.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    pub expires_in: Option<Lifetime>,
    /// Go on although the fleet does not fit the quotas Service Quotas reports (a warning).
    #[arg(long)]
    pub ignore_quotas: bool,
    /// Take over stale locks (left by a killed run): local ones whose process is gone, S3
    /// ones whose lease has ended. A live lock is never broken.
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(Debug, Args)]
pub struct FleetDownArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Take over stale locks (left by a killed run). A live lock is never broken.
    #[arg(long)]
    pub force_unlock: bool,
    /// Delete without asking. On a terminal `fleet down` lists the environments it will
    /// delete and asks; elsewhere it refuses without --yes.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct FleetStatusArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Price table for the cost so far (the format of prices/aws.yaml).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FleetHandoutArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Folder to write into (created if missing): DIR/index.html, DIR/README.md and
    /// DIR/<environment>/kubeconfig.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// What the kubeconfigs run for a token: `aws` (the standard `aws eks get-token`) or
    /// `meshstack` (`meshstack token`, no aws CLI needed).
    #[arg(long, value_enum, default_value_t = TokenCommand::Aws)]
    pub token_command: TokenCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenCommand {
    Aws,
    Meshstack,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// The region to look in. Default: AWS_REGION, or the profile's region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Tear down every expired stack without asking. Without it, on a terminal, reap lists
    /// them and asks; elsewhere it only lists them.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub accounts: AccountGuard,
    /// At most K teardowns at once.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// State folder of the stacks' journals (teardowns record themselves there).
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".meshstack",
        env = "MESHSTACK_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// Where the stacks' journals and locks live, as for `down`.
    #[arg(long, value_name = "URL", env = "MESHSTACK_STATE", value_parser = parse_state_location)]
    pub state: Option<StateLocation>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn parse_lifetime(text: &str) -> Result<Lifetime, String> {
    text.parse()
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Create an S3 bucket for shared state, or complete an existing one: versioning on, all
    /// public access blocked, default encryption, tagged. `up` and `down` never create or
    /// delete it.
    Init(StateInitArgs),
    /// Where the stack's state is, who holds its lock, and what the journal records.
    Show(StackArgs),
    /// Print the journal exactly as stored (or write it to --out).
    Pull(StatePullArgs),
    /// Replace the journal with a file, under the lock, only if nobody changed it meanwhile.
    Push(StatePushArgs),
    /// Move the stack's journal to another location, byte for byte (local <-> S3).
    Migrate(StateMigrateArgs),
}

#[derive(Debug, Args)]
pub struct StateInitArgs {
    /// s3://BUCKET[/PREFIX][?region=REGION]. Default: the stack file's `state:`.
    #[arg(value_name = "URL", value_parser = parse_state_location)]
    pub url: Option<StateLocation>,
    /// Stack file, for its region, extra tags and `state_kms_key`.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// Default encryption with this KMS key (SSE-KMS) instead of SSE-S3. Default: the stack
    /// file's `state_kms_key`.
    #[arg(long, value_name = "KEY")]
    pub kms_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatePullArgs {
    #[command(flatten)]
    pub stack: StateArgs,
    /// Write the journal to this file (mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatePushArgs {
    #[command(flatten)]
    pub stack: StateArgs,
    /// A journal, e.g. from `meshstack state pull`; it must be this stack's.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct StateMigrateArgs {
    #[command(flatten)]
    pub stack: StateArgs,
    /// Where to move the state: s3://BUCKET[/PREFIX][?region=REGION], or `local` (the state
    /// folder, --state-dir).
    #[arg(long, value_name = "URL", value_parser = parse_state_location)]
    pub to: StateLocation,
}

fn parse_state_location(text: &str) -> Result<StateLocation, String> {
    text.parse()
}

/// Where the stack and its state live.
#[derive(Debug, Args, Clone)]
pub struct StackArgs {
    /// Stack file (YAML). Default: stacks/demo.yaml if present, else the built-in copy of it.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// State folder; the journal and lock of each stack live in a sub-folder named after it.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".meshstack",
        env = "MESHSTACK_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// Where the journal and lock live: s3://BUCKET[/PREFIX][?region=REGION] for state shared
    /// through S3, or `local` for the state folder. Wins over the stack file's `state:`.
    #[arg(long, value_name = "URL", env = "MESHSTACK_STATE", value_parser = parse_state_location)]
    pub state: Option<StateLocation>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Where the stack and its state live, for commands whose output has one form.
#[derive(Debug, Args, Clone)]
pub struct StateArgs {
    /// Stack file (YAML). Default: stacks/demo.yaml if present, else the built-in copy of it.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// State folder; the journal and lock of each stack live in a sub-folder named after it.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".meshstack",
        env = "MESHSTACK_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// Where the journal and lock live: s3://BUCKET[/PREFIX][?region=REGION] for state shared
    /// through S3, or `local` for the state folder. Wins over the stack file's `state:`.
    #[arg(long, value_name = "URL", env = "MESHSTACK_STATE", value_parser = parse_state_location)]
    pub state: Option<StateLocation>,
}

impl From<StateArgs> for StackArgs {
    fn from(a: StateArgs) -> Self {
        StackArgs {
            stack: a.stack,
            state_dir: a.state_dir,
            state: a.state,
            output: Output::Text,
        }
    }
}

/// Which stages.
#[derive(Debug, Args, Clone, Default)]
pub struct Selection {
    /// Only these stages (comma-separated ids, e.g. `network,iam`).
    #[arg(long, value_name = "IDS")]
    pub only: Option<String>,
    /// All stages but these (comma-separated ids).
    #[arg(long, value_name = "IDS")]
    pub skip: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Plan without looking for AWS credentials at all.
    #[arg(long)]
    pub offline: bool,
    /// Plan a teardown instead.
    #[arg(long)]
    pub destroy: bool,
    /// Show the expiry `up --expires-in` would set.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    pub expires_in: Option<Lifetime>,
    /// Report quotas that do not fit as a warning instead of exit code 2.
    #[arg(long)]
    pub ignore_quotas: bool,
    /// Price table to estimate with (the format of prices/aws.yaml). Default: the built-in one.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Price table for the cost so far (the format of prices/aws.yaml).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

/// The stack file alone, for commands that read the cluster and not the state.
#[derive(Debug, Args, Clone)]
pub struct StackFileArgs {
    /// Stack file (YAML). Default: stacks/demo.yaml if present, else the built-in copy of it.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    #[command(flatten)]
    pub selection: Selection,
    /// Break a stale lock: alone, a local lock whose process is gone; with the lock's ID (as
    /// the refusal shows it), only the lock with that ID — the only way for S3 state. A live
    /// lock is never broken.
    #[arg(long, value_name = "LOCK_ID", num_args = 0..=1, default_missing_value = "")]
    pub force_unlock: Option<String>,
    /// Apply internalTrafficPolicy: Local on products-service even when the locality check
    /// finds a node running a products client with no Ready products pod (its calls to
    /// products are then dropped).
    #[arg(long)]
    pub allow_unsafe_locality: bool,
    /// The old name of --allow-unsafe-locality (it never forced anything else); warns.
    #[arg(long, hide = true)]
    pub force: bool,
    /// Tag every resource with `meshstack.io/expires-at` = now + DURATION (8h, 90m, 2d),
    /// fixed when the stack is created; `meshstack reap` removes it after that. Overrides
    /// `expires_in:` in the stack file.
    #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
    pub expires_in: Option<Lifetime>,
    /// Go on although the stack does not fit the quotas Service Quotas reports (a warning).
    #[arg(long)]
    pub ignore_quotas: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Tear down the stack NAME without its stack file or journal: everything is found by
    /// tag and by the names derived from NAME.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// With --name: the stack's region. Default: AWS_REGION, or the profile's region.
    #[arg(long, value_name = "REGION", requires = "name")]
    pub region: Option<String>,
    #[command(flatten)]
    pub selection: Selection,
    /// Break a stale lock: alone, a local lock whose process is gone; with the lock's ID (as
    /// the refusal shows it), only the lock with that ID — the only way for S3 state. A live
    /// lock is never broken.
    #[arg(long, value_name = "LOCK_ID", num_args = 0..=1, default_missing_value = "")]
    pub force_unlock: Option<String>,
    /// Delete without asking. On a terminal `down` shows what it will delete and asks;
    /// elsewhere (CI, scripts) it refuses without --yes.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub accounts: AccountGuard,
}

/// The account guard for commands that may run without a stack file.
#[derive(Debug, Args, Clone, Default)]
pub struct AccountGuard {
    /// Refuse (exit 2, before any write) unless the credentials are for one of these accounts
    /// (comma-separated 12-digit IDs): the stack file's `allowed_account_ids` for `down
    /// --name` and `reap`, which have none; with a stack file, both must allow the account.
    #[arg(
        long,
        value_name = "IDS",
        value_delimiter = ',',
        env = "MESHSTACK_ALLOWED_ACCOUNT_IDS"
    )]
    pub allowed_account_ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Stack file, for its region and account guard.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Stack file, for the cluster's name and region (as every other command takes it).
    /// Default: stacks/demo.yaml if present, else the built-in copy of it.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// EKS cluster name, instead of the stack's (kubeconfig entries pass it, so they work
    /// from any folder).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// AWS region of the cluster. Default: with --cluster, AWS_REGION or the profile's
    /// region; else the stack's.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Sign the token as this IAM role, assumed with your own credentials (STS AssumeRole):
    /// a workshop's attendee role, which `fleet handout` kubeconfigs name.
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Stack file, for the cluster's name and region.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// Kubeconfig to update. Default: the first file in KUBECONFIG, else ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the context (and of its cluster and user entries). Default: the stack's name.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Stack file (YAML). Default: stacks/demo.yaml if present, else the built-in copy of it.
    #[arg(long, short = 's', value_name = "FILE", env = "MESHSTACK_STACK")]
    pub stack: Option<PathBuf>,
    /// Folder to write into (created if missing); each file keeps its repository path, like
    /// DIR/karpenter/nodepool.yaml. Existing files of the same name are overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// AWS account ID for ARNs. Default: 000000000000.
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// The cluster's API server endpoint. Default: https://<cluster>.example.invalid.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Output format: the files written (and the offline stand-ins used).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct PodsArgs {
    #[command(flatten)]
    pub stack: StackFileArgs,
    /// Also draw the placement as one self-contained HTML page (zones, nodes, pods) into
    /// FILE; `-` writes it to stdout instead of the text or JSON report.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub stack: StackFileArgs,
    /// Send N graphql queries first (through the ingress gateway, or straight to the graphql
    /// pods when the gateway does not answer) and count only the traffic they cause. graphql
    /// is checked with GET /v1/test first; an answer with `errors` counts as failed.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        conflicts_with = "clusters_dump"
    )]
    pub requests: u64,
    /// The GraphQL query --requests sends to /v1/graphql. With the default, a request succeeds
    /// only with orders, products and every order's product in the answer; with another
    /// query, a 2xx answer without `errors` succeeds.
    #[arg(long, value_name = "QUERY", default_value = crate::inspect::DEFAULT_QUERY)]
    pub query: String,
    /// Also send N `GET /v1/orders/products` through the gateway (or straight to the orders-2
    /// pods): orders-2 calls products once per order there, so its products calls are
    /// measured on-node too. orders-1 answers 404 there; those are not counted.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        conflicts_with = "clusters_dump"
    )]
    pub orders_products: u64,
    /// Also draw the measurement as one self-contained HTML page into FILE: zones, nodes and
    /// pods, the traffic between zones, the verdict and the cost. `-` writes it to stdout
    /// instead of the text or JSON report. The exit code is the verdict's either way.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Analyze a saved Envoy /clusters dump of a graphql or orders sidecar instead of the
    /// cluster, as ZONE=FILE with the caller's zone; repeat for each caller. Offline: no
    /// credentials needed; products on-node shares are not measured (no pod -> node map).
    #[arg(long = "clusters-dump", value_name = "ZONE=FILE", value_parser = crate::inspect::parse_dump_arg)]
    pub clusters_dump: Vec<(String, PathBuf)>,
    /// With --clusters-dump: request plus response bytes per request, for the cost estimate.
    /// Default: 2048, reported as assumed.
    #[arg(long, value_name = "BYTES", requires = "clusters_dump")]
    pub bytes_per_request: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub stack: StackFileArgs,
    /// graphql queries sent in each phase (through the ingress gateway, else straight to the
    /// graphql pods), as `verify --requests` sends them.
    #[arg(long, value_name = "N", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: u64,
    /// The traffic profile the monthly figure is for: client requests per second.
    #[arg(long, value_name = "RPS", default_value_t = crate::locality::demo::DEFAULT_RPS)]
    pub rps: f64,
    /// Request plus response bytes per request for the cost. Default: the average measured
    /// in the after phase, else 2048 (said as assumed).
    #[arg(long, value_name = "BYTES")]
    pub bytes_per_request: Option<u64>,
    /// Wait for Enter before each step; each step first says in one line what it will show
    /// and why (on stderr).
    #[arg(long)]
    pub pause: bool,
    /// Put the "before" state back (policies off) and wait until every sidecar shows it, so
    /// the next audience sees the same show; nothing is measured. `up` or `demo` turn the
    /// policies on again.
    #[arg(long, conflicts_with_all = ["before_dump", "html", "save_dumps", "pause"])]
    pub reset: bool,
    /// Also write each phase's counters (one /clusters dump per caller sidecar, deltas over
    /// the phase) into DIR/before and DIR/after, readable by `demo --before-dump` and
    /// `verify --clusters-dump`; files are mode 0600 and replaced, never followed through a
    /// symlink.
    #[arg(long, value_name = "DIR", conflicts_with = "before_dump")]
    pub save_dumps: Option<PathBuf>,
    /// Also draw both phases (the page `verify --html` draws) side by side with the
    /// difference, as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Replay: a saved /clusters dump of the before phase, as ZONE=FILE (the caller's zone);
    /// repeat per caller. Offline, with --after-dump.
    #[arg(long = "before-dump", value_name = "ZONE=FILE", value_parser = crate::inspect::parse_dump_arg, requires = "after_dump")]
    pub before_dump: Vec<(String, PathBuf)>,
    /// Replay: a saved /clusters dump of the after phase, as ZONE=FILE; repeat per caller.
    #[arg(long = "after-dump", value_name = "ZONE=FILE", value_parser = crate::inspect::parse_dump_arg, requires = "before_dump")]
    pub after_dump: Vec<(String, PathBuf)>,
    /// How long every sidecar may take to show a policy change, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub sidecar_timeout: u64,
    /// Compare the three locality modes on this environment, same traffic each: no policy,
    /// the 2023 pattern (orders DestinationRule and internalTrafficPolicy: Local) and
    /// trafficDistribution (PreferSameZone / PreferSameNode); then both policies again with
    /// the products pod of one node that runs a products client scaled away, which Local
    /// drops and PreferSameNode falls back from. Ends with the stack's own mode and every pod
    /// back. Needs Kubernetes 1.35+ and Istio 1.27+.
    #[arg(long, conflicts_with_all = ["before_dump", "reset"])]
    pub compare: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}
