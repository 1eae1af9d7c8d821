//! `vpsup alerts test`: a test message through every channel `[alerts]`
//! configures, sent from this machine, with each channel's result.

use serde::Serialize;

use crate::alerts::{AlertsError, Channels, Delivery, Message};
use crate::settings::{project_dir, Settings, Verbosity};

pub async fn test(settings: &Settings) -> crate::exit::Result<()> {
    let config = settings.config.as_ref();
    let alerts = config
        .and_then(|c| c.alerts.as_ref())
        .ok_or_else(|| AlertsError::NotConfigured(settings.config_path.clone()))?;
    let channels = Channels::from_config(alerts, &project_dir(settings))?;
    let app = config.and_then(|c| c.app.as_ref()).map(|a| a.name.as_str());
    let message = Message::test(&this_host(), app);
    let deliveries = channels.send(&message).await;
    report(settings, &deliveries)?;
    let failed: Vec<&str> = deliveries
        .iter()
        .filter(|d| !d.ok)
        .map(|d| d.channel)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(crate::exit::Error::failed(format!(
            "alerts: {} of {} channel(s) failed: {}",
            failed.len(),
            deliveries.len(),
            failed.join(", ")
        )))
    }
}

fn report(settings: &Settings, deliveries: &[Delivery]) -> crate::exit::Result<()> {
    if settings.json {
        #[derive(Serialize)]
        struct Output<'a> {
            ok: bool,
            channels: &'a [Delivery],
        }
        let ok = deliveries.iter().all(|d| d.ok);
        println!(
            "{}",
            serde_json::to_string_pretty(&Output {
                ok,
                channels: deliveries
            })?
        );
        return Ok(());
    }
    for d in deliveries {
        match &d.error {
            None if settings.verbosity != Verbosity::Quiet => {
                println!("{} ({}): ok", d.channel, d.target)
            }
            None => {}
            Some(error) => println!("{} ({}): FAILED: {error}", d.channel, d.target),
        }
    }
    Ok(())
}

/// This machine's name, for the message's host.
fn this_host() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".to_string())
}
