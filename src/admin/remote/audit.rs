//! The audit log as `audit tail` reads it: the newest events, then every event
//! after the last one seen.

use prost_types::Timestamp;

use super::{Failure, PAGE, Remote};
use crate::proto::{AuditEvent, ListAuditEventsRequest};

impl Remote {
    /// One page of audit events (newest first) matching `filter`, after `since`.
    async fn audit_page(
        &self,
        filter: &AuditFilter,
        since: Option<Timestamp>,
        page_size: u32,
        page_token: String,
    ) -> Result<(Vec<AuditEvent>, String), Failure> {
        let req = ListAuditEventsRequest {
            subject: filter.subject.clone(),
            key_id: filter.key_id.clone(),
            kind: filter.kind.clone(),
            since,
            until: None,
            page_size,
            page_token,
        };
        let page = self
            .tokens()
            .list_audit_events(self.authed(req)?)
            .await?
            .into_inner();
        Ok((page.events, page.next_page_token))
    }

    /// The newest `n` events, oldest first (as `tail` prints them).
    pub(crate) async fn audit_newest(
        &self,
        filter: &AuditFilter,
        n: u32,
    ) -> Result<Vec<AuditEvent>, Failure> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        while (events.len() as u32) < n {
            let want = (n - events.len() as u32).min(PAGE);
            let (page, next) = self.audit_page(filter, None, want, page_token).await?;
            events.extend(page);
            if next.is_empty() {
                break;
            }
            page_token = next;
        }
        events.truncate(n as usize);
        events.reverse();
        Ok(events)
    }

    /// Every event with an id above `after_id` (oldest first). `since` (the instant of
    /// that event) narrows the query; ids are what decide.
    pub(crate) async fn audit_after(
        &self,
        filter: &AuditFilter,
        after_id: u64,
        since: Option<Timestamp>,
    ) -> Result<Vec<AuditEvent>, Failure> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let (page, next) = self.audit_page(filter, since, PAGE, page_token).await?;
            let reached_old = page.iter().any(|e| e.id <= after_id);
            events.extend(page.into_iter().filter(|e| e.id > after_id));
            if reached_old || next.is_empty() {
                break;
            }
            page_token = next;
        }
        events.sort_by_key(|e| e.id);
        Ok(events)
    }
}

/// The filters `audit tail` passes to ListAuditEvents.
#[derive(Debug, Default, Clone)]
pub(crate) struct AuditFilter {
    /// Only events about this subject.
    pub(crate) subject: String,
    /// Only events by this caller key id.
    pub(crate) key_id: String,
    /// Only this kind.
    pub(crate) kind: String,
}
