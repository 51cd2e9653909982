//! `clients list`: the registered OAuth clients.

use serde_json::json;

use super::{Failure, Output, PAGE, Remote};
use crate::admin::render;
use crate::proto::{ClientInfo, ListClientsRequest};

impl Remote {
    /// `clients list`.
    pub(crate) async fn clients_list(&self) -> Result<Output, Failure> {
        let mut clients: Vec<ClientInfo> = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = ListClientsRequest {
                page_size: PAGE,
                page_token,
            };
            let page = self
                .tokens()
                .list_clients(self.authed(req)?)
                .await?
                .into_inner();
            clients.extend(page.clients);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let json =
            json!({ "clients": clients.iter().map(render::client_json).collect::<Vec<_>>() });
        Ok(Output::new(render::clients_table(&clients), json))
    }
}
