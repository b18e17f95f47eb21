//! AWS clients. The same code talks to real AWS or to moto: only the endpoint changes.

use aws_config::{BehaviorVersion, Region};

use crate::config::AwsSettings;

#[derive(Clone, Debug)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
}

impl AwsClients {
    pub async fn new(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()));
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = loader.load().await;
        // moto serves buckets by path, not by virtual host.
        let s3_config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(settings.endpoint_url.is_some())
            .build();
        Self {
            sqs: aws_sdk_sqs::Client::new(&sdk_config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
        }
    }
}

/// The message of an SDK error, including the service's own error code when there is one.
pub fn describe_sdk_error<E, R>(error: &aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use std::error::Error as _;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
