//! Fuzz target: the blueprint parser answers any text with a blueprint or an error naming a line, never a
//! panic; a blueprint it accepts has its dependencies before their dependents.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match control::blueprint::parse(text, &|_| true) {
        Ok(blueprint) => {
            for (i, artifact) in blueprint.order.iter().enumerate() {
                let spec = blueprint.slices.iter().find(|s| s.artifact == *artifact).expect("ordered artifact is a slice");
                for dependency in &spec.depends_on {
                    let at = blueprint.order.iter().position(|a| a == dependency).expect("dependency is ordered");
                    assert!(at < i, "dependency after its dependent");
                }
            }
        }
        Err(e) => assert!(e.line >= 1),
    }
});
