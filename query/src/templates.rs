//! `query templates`: the built-in traffic-source and affiliate-network presets, and for one of
//! them the config to write and the URLs to paste (catalog::presets holds the data).

use std::fmt::Write as _;

use catalog::file::{NetworkConfig, TrafficSourceConfig};
use catalog::presets;

use crate::{QueryError, Result};

/// The list of templates, or (`name`) one template's details.
pub fn describe(name: Option<&str>, edge: &str, campaign: &str) -> Result<String> {
    let mut s = String::new();
    let Some(name) = name else {
        let _ = writeln!(
            s,
            "Traffic sources (template = \"NAME\" in [[traffic_sources]]):"
        );
        let _ = writeln!(
            s,
            "  {:<16} {:<22} {:<14} {:<10} postback",
            "NAME", "SOURCE", "CLICK ID", "COST"
        );
        for p in presets::sources() {
            let postback = match p.postback_url.as_deref() {
                None => "none (see notes)",
                Some(u) if catalog::postback::placeholder(u).is_some() => "needs account values",
                Some(_) => "ready",
            };
            let _ = writeln!(
                s,
                "  {:<16} {:<22} {:<14} {:<10} {postback}",
                p.template,
                p.name,
                p.external_id_param.as_deref().unwrap_or("-"),
                p.cost_param.as_deref().unwrap_or("-"),
            );
        }
        let _ = writeln!(
            s,
            "\nAffiliate networks (template = \"NAME\" in [[affiliate_networks]]):"
        );
        let _ = writeln!(
            s,
            "  {:<16} {:<22} {:<16} {:<18} txid",
            "NAME", "NETWORK", "CLICK ID MACRO", "PAYOUT MACRO"
        );
        for p in presets::networks() {
            let _ = writeln!(
                s,
                "  {:<16} {:<22} {:<16} {:<18} {}",
                p.template,
                p.name,
                p.click_id_macro.as_deref().unwrap_or("-"),
                p.payout_macro.as_deref().unwrap_or("-"),
                p.txid_macro.as_deref().unwrap_or("-"),
            );
        }
        let _ = writeln!(s, "\n`query templates NAME` prints one's config and URLs.");
        return Ok(s);
    };
    if let Some(p) = presets::source(name) {
        let cfg = TrafficSourceConfig {
            id: p.template.clone(),
            template: Some(p.template.clone()),
            ..Default::default()
        };
        let (resolved, _) = presets::resolve_source(&cfg, "template")?;
        let _ = writeln!(s, "{} (traffic source template {:?})", p.name, p.template);
        if !p.docs.is_empty() {
            let _ = writeln!(s, "Documented at: {}", p.docs);
        }
        let _ = writeln!(
            s,
            "\nIn the config:\n\n[[traffic_sources]]\nid = \"{}\"\ntemplate = \"{}\"",
            p.template, p.template
        );
        if let Some(u) = &p.postback_url
            && catalog::postback::placeholder(u).is_some()
        {
            let _ = writeln!(
                s,
                "# Fill in the values of your account (${{…}}):\npostback_url = \"{u}\""
            );
        }
        let _ = writeln!(s, "\nReport dimensions (remapped name <- URL parameter):");
        for (k, v) in &resolved.params {
            let _ = writeln!(s, "  {k:<18} <- {v}");
        }
        if let Some(c) = &resolved.cost_param {
            let _ = writeln!(s, "  {:<18} <- {c}", "(cost)");
        }
        if let Some(c) = &resolved.external_id_param {
            let _ = writeln!(s, "  {:<18} <- {c}", "(source click id)");
        }
        let _ = writeln!(
            s,
            "\nCampaign URL to paste into {}:\n  {}",
            p.name,
            presets::campaign_url(edge, campaign, &resolved)
        );
        match &p.postback_url {
            Some(u) => {
                let _ = writeln!(
                    s,
                    "\nPostback the dispatcher sends it (statuses: {}):\n  {u}",
                    p.postback_statuses
                        .as_ref()
                        .map_or_else(|| "lead, sale".to_owned(), |v| v.join(", "))
                );
            }
            None => {
                let _ = writeln!(s, "\nNo postback URL.");
            }
        }
        if !p.notes.is_empty() {
            let _ = writeln!(s, "\nNotes: {}", p.notes);
        }
        return Ok(s);
    }
    if let Some(p) = presets::network(name) {
        let cfg = NetworkConfig {
            id: p.template.clone(),
            template: Some(p.template.clone()),
            postback_token: "YOUR_TOKEN".into(),
            ..Default::default()
        };
        let resolved = presets::resolve_network(&cfg, "template")?;
        let _ = writeln!(
            s,
            "{} (affiliate network template {:?})",
            p.name, p.template
        );
        if !p.docs.is_empty() {
            let _ = writeln!(s, "Documented at: {}", p.docs);
        }
        let _ = writeln!(
            s,
            "\nIn the config:\n\n[[affiliate_networks]]\nid = \"{}\"\ntemplate = \"{}\"\npostback_token = \"YOUR_TOKEN\"   # a long random string",
            p.template, p.template
        );
        if let Some(sub) = &p.sub_param {
            let _ = writeln!(
                s,
                "\nOffer URLs pass our click id as {sub}: https://offer.example/?{sub}={{click_id}}"
            );
        }
        let _ = writeln!(
            s,
            "\nPostback URL to paste into {}:\n  {}",
            p.name,
            presets::network_postback_url(edge, &resolved)
        );
        if !resolved.status_map.is_empty() {
            let _ = writeln!(s, "\nStatuses:");
            for (k, v) in &resolved.status_map {
                let _ = writeln!(s, "  {k:<18} -> {v}");
            }
        }
        if !p.notes.is_empty() {
            let _ = writeln!(s, "\nNotes: {}", p.notes);
        }
        return Ok(s);
    }
    Err(QueryError::UnknownTemplate(name.to_owned()))
}
