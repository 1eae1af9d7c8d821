//! The webhook channel: one JSON POST in the shape `webhook_format` names.

use super::http::HttpClient;
use super::message::Message;
use crate::config::WebhookFormat;

pub struct Webhook {
    pub url: String,
    pub format: WebhookFormat,
    pub http: HttpClient,
}

impl Webhook {
    pub fn payload(&self, message: &Message) -> serde_json::Value {
        match self.format {
            WebhookFormat::Json => message.json(),
            WebhookFormat::Slack => message.slack(),
            WebhookFormat::Discord => message.discord(),
        }
    }

    pub async fn send(&self, message: &Message) -> Result<(), String> {
        let body = serde_json::to_vec(&self.payload(message)).map_err(|e| e.to_string())?;
        let headers = [("content-type", "application/json".to_string())];
        self.http.post(&self.url, &headers, body).await
    }
}
