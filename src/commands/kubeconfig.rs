//! `meshstack token` and `meshstack kubeconfig`: cluster access for kubectl, through this
//! binary as the credential plugin.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{connect, credentials, load_stack_path, usage};
use crate::stages;

/// `meshstack token`: the ExecCredential kubectl reads from its credential plugin. stdout
/// carries only the JSON document; the token is made locally, the only possible network use
/// being the credential chain itself (SSO, instance metadata, an assumed role).
pub async fn token(args: crate::cli::TokenArgs) -> anyhow::Result<ExitCode> {
    use crate::k8s::token::{eks_token, exec_credential_json, TokenError};

    // --cluster names the cluster outright (kubeconfig entries do, to work from any folder);
    // otherwise it is the stack's, in the stack's region.
    let (cluster, stack_region) = match &args.cluster {
        Some(name) => (name.clone(), None),
        None => {
            let stack = load_stack_path(args.stack.as_deref())?;
            (
                stack.cluster_name().to_string(),
                stack.region().map(str::to_string),
            )
        }
    };
    let mut loader = crate::aws::sdk_defaults();
    if let Some(region) = args.region.as_ref().or(stack_region.as_ref()) {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
        usage("no AWS region for the token: pass --region, or set AWS_REGION or a profile region")
    })?;
    let creds = match &args.role_arn {
        None => credentials(&sdk).await.map_err(usage)?,
        Some(arn) => assumed_credentials(&sdk, arn).await?,
    };
    let token = eks_token(&cluster, &region, &creds, std::time::SystemTime::now()).map_err(
        |e| match e {
            TokenError::Signing(_) => anyhow::Error::new(e),
            input => usage(input),
        },
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", exec_credential_json(&token))?;
    Ok(ExitCode::SUCCESS)
}

/// Credentials of `role_arn`, assumed through STS with the caller's own credentials (the
/// session is named `meshstack-token`, which CloudTrail shows).
async fn assumed_credentials(
    sdk: &aws_config::SdkConfig,
    role_arn: &str,
) -> anyhow::Result<aws_credential_types::Credentials> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let is_role = role_arn.starts_with("arn:")
        && role_arn.split(':').nth(2) == Some("iam")
        && role_arn
            .split(':')
            .nth(5)
            .is_some_and(|r| r.starts_with("role/") && r.len() > "role/".len());
    if !is_role {
        return Err(usage(format!(
            "--role-arn `{role_arn}` is not an IAM role ARN; write one like \
             arn:aws:iam::111122223333:role/workshop-01-attendee"
        )));
    }
    if sdk.credentials_provider().is_none() {
        return Err(usage(
            "no credentials provider configured to assume the role with",
        ));
    }
    let assumed = crate::aws::AwsClients::assume_role(sdk, role_arn, None, "meshstack-token").await;
    let provider = assumed
        .credentials_provider()
        .expect("assume_role sets a credentials provider");
    // STS is one call away; the credential chain under it (SSO, IMDS) may take a few more.
    match tokio::time::timeout(
        std::time::Duration::from_secs(30),
        provider.provide_credentials(),
    )
    .await
    {
        Ok(Ok(creds)) => Ok(creds),
        Ok(Err(e)) => Err(usage(format!(
            "cannot assume role {role_arn} with your AWS credentials: {}; is your identity \
             among those its trust policy names (the stack's `access.trust`)?",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        ))),
        Err(_) => Err(usage(format!(
            "assuming role {role_arn} timed out after 30 s"
        ))),
    }
}

/// `meshstack kubeconfig`: merge a context for the stack's cluster into the kubeconfig, its
/// user running this very binary's `token` command.
pub async fn kubeconfig(args: crate::cli::KubeconfigArgs) -> anyhow::Result<ExitCode> {
    use crate::k8s::kubeconfig::{self as kc, ExecPlugin, KubeconfigEntry};

    let stack = load_stack_path(args.stack.as_deref())?;
    if let Some(e) = stack.existing_cluster() {
        return Err(usage(format!(
            "the stack runs on an existing cluster (cluster.existing), reached through {}; \
             meshstack writes no kubeconfig entry for it",
            match (&e.kubeconfig, &e.context) {
                (Some(p), Some(c)) => format!("context {c} of {}", p.display()),
                (Some(p), None) => format!("the current context of {}", p.display()),
                (None, Some(c)) => format!("context {c} of your kubeconfig"),
                (None, None) => "your kubeconfig's current context".to_string(),
            }
        )));
    }
    let path = match args.kubeconfig {
        Some(p) => p,
        None => kc::default_path().map_err(usage)?,
    };
    let name = args.context.unwrap_or_else(|| stack.name.clone());
    if name.trim().is_empty() {
        return Err(usage("--context must not be empty"));
    }
    let file_error =
        |e: kc::KubeconfigError| usage(format!("{}: {:#}", path.display(), anyhow::Error::new(e)));
    // A file we could not merge into is reported before any API call.
    let existing = kc::read(&path)?;
    if let Some(text) = &existing {
        kc::current_context(text).map_err(file_error)?;
    }

    let aws = connect(&stack).await.map_err(usage)?;
    let cluster = stack.cluster_name();
    let where_ = format!(
        "stack `{}`: EKS cluster `{cluster}` in {}",
        stack.name, aws.region
    );
    let facts = match stages::cluster::find(&aws, &stack)
        .await
        .with_context(|| format!("looking up {where_}"))?
    {
        None => anyhow::bail!("{where_} does not exist; create it with `meshstack up`"),
        Some((seen, _)) if !seen.ours => anyhow::bail!(
            "{where_} is not tagged {}={}; meshstack writes kubeconfig entries only for clusters it manages",
            crate::aws::STACK_TAG,
            stack.name
        ),
        Some((seen, facts)) if facts.endpoint.is_empty() || facts.certificate_authority.is_empty() => {
            anyhow::bail!(
                "{where_} is {} and has no API endpoint yet; let `meshstack up` finish first",
                seen.status
            )
        }
        Some((_, facts)) => facts,
    };

    // The absolute path of this binary, so the entry works whatever kubectl's PATH is.
    let command = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "meshstack".to_string());
    let mut exec = ExecPlugin::meshstack_token(command, cluster, &aws.region);
    // kubectl runs the plugin with its own environment; pin the profile used now so the token
    // is signed by the identity that can reach the cluster, as `aws eks update-kubeconfig` does.
    if let Some(profile) = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()) {
        exec.env.push(("AWS_PROFILE".into(), profile));
    }
    let entry = KubeconfigEntry {
        name: name.clone(),
        server: facts.endpoint,
        certificate_authority_data: facts.certificate_authority,
        exec,
    };
    let merged = kc::merge(existing.as_deref(), &entry).map_err(file_error)?;
    kc::write_atomic(&path, &merged)?;

    let mut out = std::io::stdout().lock();
    let current = kc::current_context(&merged).map_err(file_error)?;
    if args.output == crate::cli::Output::Json {
        let doc = serde_json::json!({
            "context": name,
            "cluster": cluster,
            "region": aws.region,
            "kubeconfig": path.display().to_string(),
            "current_context": current,
        });
        writeln!(out, "{doc}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "wrote context `{name}` for EKS cluster `{cluster}` ({}) to {}",
        aws.region,
        path.display()
    )?;
    match current {
        Some(current) if current == name => writeln!(out, "current context: `{name}`")?,
        Some(current) => {
            // kubectl acts on the default file unless told otherwise.
            let flag = if kc::default_path().is_ok_and(|d| d == path) {
                String::new()
            } else {
                format!(" --kubeconfig {}", path.display())
            };
            writeln!(
                out,
                "current context stays `{current}`; switch with `kubectl config use-context {name}{flag}`"
            )?
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}
