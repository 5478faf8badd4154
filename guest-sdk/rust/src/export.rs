//! The glue `export!` instantiates: it answers `describe` and routes `handle` to the handler
//! registered for the message's type.

use std::marker::PhantomData;

use crate::__private::bindings::courier::bus::types;
use crate::__private::bindings::exports::courier::bus::handler::Guest;
use crate::context::Context;
use crate::error::HandleError;

/// One handler, as `#[handler]` describes it.
#[derive(Debug, Clone, Copy)]
pub struct HandlerEntry {
    /// The message type URN the handler takes.
    pub message_type: &'static str,
    /// Decodes the consumed body and calls the handler.
    pub invoke: fn(&mut Context) -> Result<(), HandleError>,
}

/// What `export!` knows about the plugin crate.
pub trait PluginDescriptor {
    const NAME: &'static str;
    const VERSION: &'static str;
    const HANDLERS: &'static [HandlerEntry];
}

/// The exported `handler` interface, for the plugin `P`.
#[derive(Debug)]
pub struct Exported<P>(PhantomData<P>);

impl<P: PluginDescriptor> Guest for Exported<P> {
    fn describe() -> types::PluginInfo {
        types::PluginInfo {
            name: P::NAME.to_owned(),
            version: P::VERSION.to_owned(),
            subscriptions: P::HANDLERS
                .iter()
                .map(|entry| entry.message_type.to_owned())
                .collect(),
        }
    }

    fn handle(message: types::Message) -> Result<(), types::HandleError> {
        let Some(entry) = P::HANDLERS
            .iter()
            .find(|entry| entry.message_type == message.message_type)
        else {
            return Err(types::HandleError::Reject(format!(
                "plugin {} has no handler for {}",
                P::NAME,
                message.message_type
            )));
        };
        let mut context = Context::new(message);
        (entry.invoke)(&mut context).map_err(|error| match error {
            HandleError::Retry(reason) => types::HandleError::Retry(reason),
            HandleError::Reject(reason) => types::HandleError::Reject(reason),
        })
    }
}
