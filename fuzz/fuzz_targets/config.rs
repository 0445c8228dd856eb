//! The configuration loader: TOML text into a [`Config`], checked and
//! resolved into the `Settings` the server runs with.
//!
//! Input: the text of a configuration file (the file is read by the same
//! figment TOML provider `Config::load` uses; the environment is left out
//! so that a crash reproduces anywhere).
//!
//! Properties: no input panics; resolving is deterministic (the same
//! settings, or the same error, twice); what resolves has the token
//! lifetimes within the bounds the checks promise.

#![no_main]

use figment::providers::{Format, Toml};
use figment::Figment;
use libfuzzer_sys::fuzz_target;
use swarmgate_server::Config;

/// What is compared between two resolutions of one config.
fn summary(config: &Config) -> Result<String, String> {
    config
        .resolve()
        .map(|s| {
            format!(
                "{} {} {} {} {:?} {}",
                s.listen,
                s.service.public_url,
                s.service.access_ttl_secs,
                s.service.refresh_ttl_secs,
                s.routes,
                s.log_json,
            )
        })
        .map_err(|e| e.to_string())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Figment::from(Toml::string(text)).extract::<Config>() else {
        return;
    };
    let first = summary(&config);
    assert_eq!(first, summary(&config), "{text}");
    if let Ok(settings) = config.resolve() {
        let s = &settings.service;
        assert!((3600..=8760 * 3600).contains(&s.access_ttl_secs));
        assert!((86_400..=3650 * 86_400).contains(&s.refresh_ttl_secs));
        assert!(!s.audience.trim().is_empty());
    }
});
