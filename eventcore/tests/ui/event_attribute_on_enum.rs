use eventcore::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(version = 2)]
enum AccountEvent {
    Opened,
    Closed,
}

fn main() {}
