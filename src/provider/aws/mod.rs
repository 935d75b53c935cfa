//! AWS credentials and secrets through the real AWS SDK: `kind: aws`
//! (STS AssumeRole) and `kind: secrets` (Secrets Manager).

pub mod limits;
mod rate;
mod secrets;
mod sts;

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};

pub use limits::MIN_SESSION;
pub use rate::RateLimiter;
pub use secrets::SecretsProvider;
pub use sts::{SESSION_SKEW, StsProvider, cache_ttl};

use super::ProviderError;

/// `aws:` settings from config.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Region; when absent the SDK's region chain (AWS_REGION, profile) is used.
    pub region: Option<String>,
    /// Endpoint override, for local emulators.
    pub endpoint_url: Option<String>,
    /// TCP/TLS connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Whole-operation timeout, retries included.
    pub operation_timeout: Duration,
    /// Attempts per call in the SDK's standard retry mode (throttling, 5xx).
    pub max_attempts: u32,
    /// STS calls per second per AWS account (token bucket refill rate).
    pub sts_per_second: f64,
    /// STS bucket size: calls allowed in a burst.
    pub sts_burst: u32,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            endpoint_url: None,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            // AWS allows 600 AssumeRole calls/s per account; stay far below it
            // so a CI fan-out never throttles every other user of the account.
            sts_per_second: 20.0,
            sts_burst: 40,
        }
    }
}

/// Loads the SDK config: stint's own identity from the standard credential
/// chain (env, profile, web identity / IRSA, container, IMDS) unless
/// `credentials` overrides it.
pub async fn sdk_config(
    settings: &AwsSettings,
    credentials: Option<SharedCredentialsProvider>,
) -> Result<aws_config::SdkConfig, String> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout)
        .operation_timeout(settings.operation_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts));
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err("aws.region: not set, and the environment names no region (AWS_REGION)".to_string());
    }
    Ok(config)
}

/// Error codes that mean "slow down" rather than "no".
pub(crate) const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
];

/// Sorts an SDK error into refused (502), unavailable (503) or internal.
/// `what` names the call for the caller (`AssumeRole of arn:... for grant deploy`).
pub(crate) fn classify<E>(what: &str, err: &SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let log = format!("{}", aws_smithy_types::error::display::DisplayErrorContext(err));
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_string();
            // A 5xx is AWS's trouble (or a proxy's), whatever the code says.
            let server_side = service.raw().status().is_server_error()
                || matches!(
                    code.as_str(),
                    "InternalFailure" | "InternalServiceError" | "InternalError" | "ServiceUnavailable"
                );
            if THROTTLING.contains(&code.as_str()) || server_side {
                ProviderError::Unavailable {
                    detail: format!("AWS could not serve {what} ({code})"),
                    log,
                }
            } else {
                ProviderError::Refused {
                    detail: format!("AWS refused {what} ({code})"),
                    log,
                }
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::Unavailable {
                detail: format!("AWS did not answer {what}"),
                log,
            }
        }
        _ => ProviderError::Internal(log),
    }
}
