//! The ntfy channel: the text as the body of a POST to the topic URL, the
//! title, priority and tags as ntfy's headers, the token (if any) as a
//! bearer token.

use super::http::HttpClient;
use super::message::Message;
use super::Secret;

pub struct Ntfy {
    pub url: String,
    pub token: Option<Secret>,
    pub http: HttpClient,
}

impl Ntfy {
    /// ntfy's headers (header values are ASCII: anything else becomes `?`).
    pub fn headers(&self, message: &Message) -> Vec<(&'static str, String)> {
        let ascii = |s: String| {
            s.chars()
                .map(|c| {
                    if c.is_ascii() && !c.is_ascii_control() {
                        c
                    } else {
                        '?'
                    }
                })
                .collect::<String>()
        };
        let (priority, tags) = if message.is_bad() {
            ("high", "warning")
        } else {
            ("default", "white_check_mark")
        };
        let mut headers = vec![
            ("title", ascii(message.title())),
            ("priority", priority.to_string()),
            ("tags", tags.to_string()),
            ("content-type", "text/plain; charset=utf-8".to_string()),
        ];
        if let Some(token) = &self.token {
            headers.push(("authorization", format!("Bearer {}", token.expose())));
        }
        headers
    }

    pub async fn send(&self, message: &Message) -> Result<(), String> {
        let body = message.text().into_bytes();
        self.http
            .post(&self.url, &self.headers(message), body)
            .await
    }
}
