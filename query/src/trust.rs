//! Which conversions count: the trust rules of docs/query.md "Trust", as SQL over a conversion
//! report joined to its click's visit.
//!
//! Click ids are public (every visitor sees one in its redirect), so a conversion counts only
//! when it is authenticated for the network of its click's offer: a postback must carry that
//! network's token when the network has one (the edge records which network's token a
//! postback carried, `auth_network_id`); a pixel counts only when the network takes pixels
//! (`network_pixels`), and its own payout only when the network believes it. The network's
//! rules are stored with the visit (a landing-page visit takes its latest click's; a postback
//! carrying the token of any network its clicks went to counts), as they were when the visit
//! was answered, so any engine can apply them without the config. A conversion whose click
//! matches no visit, or a landing-page visit that reached no offer, counts only when it
//! carried a token, or when no network required one when it arrived (`auth = 'open'`).
//! Among the reports of one conversion, an authenticated one outranks the others.
//!
//! A refused report is kept in the store; it never counts in a report, never replaces the
//! status or payout of a report that counts, and shows in the conversion feed with status
//! `refused` and the reason.

/// The columns the rules read, as SQL expressions in the query that uses them.
pub struct Rules<'a> {
    /// Whether the conversion's click matches a visit.
    pub known: &'a str,
    /// The conversion's `method` (postback | pixel), `auth` and `auth_network_id`.
    pub method: &'a str,
    pub auth: &'a str,
    pub auth_network: &'a str,
    /// The click's network, its `network_token` and its `network_pixels`: the visit's, or
    /// for a landing-page visit its latest click-through's (before one, no network: the visit
    /// stores `network_token = true` and `network_pixels = 'off'`).
    pub network: &'a str,
    pub token: &'a str,
    pub pixels: &'a str,
    /// An array of every network a landing-page visit's click-throughs went to (null for
    /// other visits): a postback carrying the token of any of them counts.
    pub clicked_networks: &'a str,
}

/// Why a report is refused, as a string; null when it counts.
pub const NO_TOKEN: &str = "the postback did not carry the token of the click's network";
pub const NOT_CLICKED: &str =
    "the landing-page visit reached no offer yet, and the postback carried no token";
pub const PIXELS_OFF: &str = "the click's network does not take pixel conversions";
pub const UNKNOWN_UNAUTHENTICATED: &str =
    "no visit has this click id, and the conversion carried no postback token";

impl Rules<'_> {
    /// SQL for the reason a report is refused (null when it counts).
    pub fn refusal(&self) -> String {
        let Rules {
            known,
            method,
            auth,
            auth_network,
            network,
            token,
            pixels,
            clicked_networks,
        } = self;
        let lit = crate::sql_literal;
        let (unknown, not_clicked, pixels_off, no_token) = (
            lit(UNKNOWN_UNAUTHENTICATED),
            lit(NOT_CLICKED),
            lit(PIXELS_OFF),
            lit(NO_TOKEN),
        );
        // Stores written before these columns existed hold nulls in them: such reports
        // passed the checks of their time and count. A postback that came when no network
        // required a token (`open`) proves nothing but was not asked to.
        format!(
            "(CASE \
               WHEN NOT ({known}) THEN \
                 CASE WHEN coalesce({auth}, 'open') IN ('token', 'open') THEN NULL \
                      ELSE {unknown} END \
               WHEN {method} = 'pixel' AND {pixels} = 'off' THEN {pixels_off} \
               WHEN {method} <> 'postback' OR {token} IS NOT TRUE \
                    OR coalesce({auth}, 'open') = 'open' THEN NULL \
               WHEN {network} IS NULL THEN \
                 CASE WHEN {auth_network} IS NOT NULL THEN NULL ELSE {not_clicked} END \
               WHEN {auth_network} = {network} \
                    OR coalesce(array_has({clicked_networks}, {auth_network}), false) THEN NULL \
               ELSE {no_token} END)"
        )
    }

    /// SQL for the payout a report counts with: a pixel's own only where its network believes
    /// it (else null: the offer's default payout).
    pub fn payout(&self, payout: &str) -> String {
        format!(
            "CASE WHEN {} = 'pixel' AND {} = 'default_payout' THEN NULL ELSE {payout} END",
            self.method, self.pixels
        )
    }
}
