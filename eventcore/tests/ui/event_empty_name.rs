use eventcore::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(name = "")]
struct Pinged {
    n: u32,
}

fn main() {}
