//! `sidecache purge`: asks a running sidecache's admin API (`POST /admin/purge`) to apply
//! one purge, saying it comes from the CLI ([`PurgeSource::Cli`]), and prints the answer.

use std::time::Duration;

use http::header::HOST;

use super::{PurgeKind, PurgeSource};
use crate::client::{
    block_on, header_map, ClientError, CommandStatus, Connection, HttpUrl, PostResponse,
};

/// Bound of the whole purge call: connecting, sending and reading the answer.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What `sidecache purge` was asked for.
#[derive(Debug, Clone)]
pub struct PurgeCommand {
    /// Admin base URL of the running sidecache (`http://host:port`).
    pub admin: String,
    /// Bearer token for the admin API, if it needs one.
    pub token: Option<String>,
    /// What `target` is: a url, a url prefix or a tag.
    pub kind: PurgeKind,
    /// The url (path and query), url prefix or tag to purge.
    pub target: String,
    /// A soft purge (`--soft`).
    pub soft: bool,
}

impl PurgeCommand {
    /// The purge endpoint under the admin base URL.
    pub fn endpoint(&self) -> String {
        format!("{}/admin/purge", self.admin.trim_end_matches('/'))
    }

    /// The request body: `{"<kind>": target, "source": "cli"}`, and `"soft": true` for a soft
    /// purge.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        body.insert(self.kind.label().to_owned(), self.target.clone().into());
        body.insert("source".to_owned(), PurgeSource::Cli.label().into());
        if self.soft {
            body.insert("soft".to_owned(), true.into());
        }
        body.into()
    }

    /// Sends the purge and returns the admin API's answer, whatever its status.
    pub async fn send(&self) -> Result<PostResponse, ClientError> {
        let url = HttpUrl::parse(&self.endpoint())?;
        let auth: Vec<(String, String)> = self
            .token
            .iter()
            .map(|t| ("authorization".to_owned(), format!("Bearer {t}")))
            .collect();
        let mut headers = header_map(&auth)?;
        headers.insert(HOST, url.host);
        Connection::new(url.connect)
            .post_json(&url.path, &headers, self.body().to_string(), TIMEOUT)
            .await
    }
}

/// Runs `sidecache purge`: prints the admin API's answer and says whether it was a 200.
pub fn command(cmd: &PurgeCommand) -> CommandStatus {
    let failure = match block_on(cmd.send()) {
        Ok(Ok(answer)) => {
            println!("{}", answer.body);
            return if answer.status == 200 {
                CommandStatus::Succeeded
            } else {
                CommandStatus::Failed
            };
        }
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    eprintln!("sidecache purge: {}: {failure}", cmd.endpoint());
    CommandStatus::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(admin: &str, kind: PurgeKind, target: &str) -> PurgeCommand {
        PurgeCommand {
            admin: admin.to_owned(),
            token: None,
            kind,
            target: target.to_owned(),
            soft: false,
        }
    }

    #[test]
    fn the_body_names_the_target_and_the_cli_as_its_source() {
        let body = |kind, target| purge("http://h:1", kind, target).body().to_string();
        assert_eq!(
            body(PurgeKind::Url, "/a?b=1"),
            r#"{"source":"cli","url":"/a?b=1"}"#
        );
        assert_eq!(
            body(PurgeKind::Prefix, "/api/"),
            r#"{"prefix":"/api/","source":"cli"}"#
        );
        assert_eq!(
            body(PurgeKind::Tag, "contractor:4"),
            r#"{"source":"cli","tag":"contractor:4"}"#
        );
        let soft = PurgeCommand {
            soft: true,
            ..purge("http://h:1", PurgeKind::Tag, "t")
        };
        assert_eq!(
            soft.body().to_string(),
            r#"{"soft":true,"source":"cli","tag":"t"}"#
        );
    }

    #[test]
    fn the_endpoint_sits_under_the_admin_base() {
        for admin in ["http://127.0.0.1:9091", "http://127.0.0.1:9091/"] {
            assert_eq!(
                purge(admin, PurgeKind::Tag, "t").endpoint(),
                "http://127.0.0.1:9091/admin/purge"
            );
        }
        assert_eq!(
            purge("http://h:1/sc/", PurgeKind::Tag, "t").endpoint(),
            "http://h:1/sc/admin/purge"
        );
    }

    #[tokio::test]
    async fn an_unusable_admin_url_or_token_fails_before_connecting() {
        let err = purge("https://h:1", PurgeKind::Tag, "t")
            .send()
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::InvalidUrl(_)), "{err:?}");
        let cmd = PurgeCommand {
            token: Some("a\nb".into()),
            ..purge("http://127.0.0.1:1", PurgeKind::Tag, "t")
        };
        let err = cmd.send().await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidHeader(_)), "{err:?}");
    }
}
