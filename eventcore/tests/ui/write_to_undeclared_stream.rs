// A command can only write to streams it declared: a bare StreamId is not a
// write target, and another command's DeclaredStream is a different type.
use eventcore::{
    Command, CommandLogic, Event, HandleContext, StoredEvent, StreamId, Writes,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Deposited;

impl Event for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

#[derive(Command)]
struct Deposit {
    #[stream]
    account: StreamId,
    #[stream(skip)]
    audit_log: StreamId,
}

#[derive(Command)]
struct Other {
    #[stream]
    elsewhere: StreamId,
}

impl CommandLogic for Deposit {
    type State = ();
    type Event = Deposited;
    type Error = std::convert::Infallible;

    fn apply(&self, _: &mut (), _: &StoredEvent<Deposited>) {}

    fn handle(&self, _: (), _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Self::Error> {
        let other = Other { elsewhere: self.account.clone() };
        Ok(Writes::new()
            .emit(self.audit_log.clone(), Deposited)
            .emit(other.elsewhere_stream(), Deposited))
    }
}

impl CommandLogic for Other {
    type State = ();
    type Event = Deposited;
    type Error = std::convert::Infallible;

    fn apply(&self, _: &mut (), _: &StoredEvent<Deposited>) {}

    fn handle(&self, _: (), _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Self::Error> {
        Ok(Writes::new())
    }
}

fn main() {}
