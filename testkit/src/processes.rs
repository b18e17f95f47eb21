//! The processes below a process, from `/proc` (Linux only, like the fleet).

/// Direct children of `pid` (every thread's `children` list); empty once `pid` is gone.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        children.extend(
            list.split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok()),
        );
    }
    children
}

/// Every process below `pid`: its children, theirs, and so on (a worker's extraction server and
/// the children the server forks per file).
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = children_of(pid);
    while let Some(child) = next.pop() {
        next.extend(children_of(child));
        found.push(child);
    }
    found
}
