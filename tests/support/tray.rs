//! The app's tray menu, read and clicked over D-Bus as a desktop panel would.
//!
//! The tray host (`org.kde.StatusNotifierWatcher`) lists registered items as
//! `<bus name><object path>`; each item exports its menu through `com.canonical.dbusmenu`.

use std::sync::LazyLock;

use regex::Regex;

use crate::Desktop;

/// One entry of the tray menu.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrayItem {
    /// The dbusmenu id, used to click it.
    pub id: i32,
    /// Its text; empty for separators.
    pub label: String,
    /// False for greyed-out entries such as the status line.
    pub enabled: bool,
}

/// Where an app's tray menu lives on the bus.
#[derive(Clone, Debug)]
pub struct TrayMenu {
    bus_name: String,
    menu_path: String,
}

/// A registered item: a unique bus name, with the item's object path when the host keeps it.
static ITEM_ADDRESS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"'(:[0-9.]+)(/[^']*)?'").expect("valid regex"));
static OBJECT_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"objectpath '([^']+)'").expect("valid regex"));
static LAYOUT_ITEM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\((\d+), \{([^}]*)\}").expect("valid regex"));
static LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"'label': <(?:'([^']*)'|"([^"]*)")>"#).expect("valid regex"));

impl TrayMenu {
    /// The menu of the first item registered with the tray host, if any.
    pub fn find(desktop: &Desktop) -> anyhow::Result<Option<Self>> {
        let registered = desktop.gdbus(&[
            "call",
            "--dest",
            "org.kde.StatusNotifierWatcher",
            "--object-path",
            "/StatusNotifierWatcher",
            "--method",
            "org.freedesktop.DBus.Properties.Get",
            "org.kde.StatusNotifierWatcher",
            "RegisteredStatusNotifierItems",
        ])?;
        let Some(address) = ITEM_ADDRESS.captures(&registered) else {
            return Ok(None);
        };
        let bus_name = address[1].to_owned();
        let item_path = match address.get(2) {
            Some(path) => path.as_str().to_owned(),
            None => find_item_path(desktop, &bus_name)?,
        };
        let menu = desktop.gdbus(&[
            "call",
            "--dest",
            &bus_name,
            "--object-path",
            &item_path,
            "--method",
            "org.freedesktop.DBus.Properties.Get",
            "org.kde.StatusNotifierItem",
            "Menu",
        ])?;
        let menu_path = OBJECT_PATH
            .captures(&menu)
            .map(|c| c[1].to_owned())
            .ok_or_else(|| anyhow::anyhow!("tray item has no menu: {menu}"))?;
        Ok(Some(Self {
            bus_name,
            menu_path,
        }))
    }

    /// The menu's entries, top to bottom.
    pub fn items(&self, desktop: &Desktop) -> anyhow::Result<Vec<TrayItem>> {
        let layout = self.call(desktop, "GetLayout", &["0", "-1", "[]"])?;
        Ok(parse_layout(&layout))
    }

    /// Click the entry whose label is `label`.
    pub fn click(&self, desktop: &Desktop, label: &str) -> anyhow::Result<()> {
        let items = self.items(desktop)?;
        let item = items
            .iter()
            .find(|item| item.label == label)
            .ok_or_else(|| anyhow::anyhow!("no tray entry {label:?} in {items:?}"))?;
        self.call(
            desktop,
            "Event",
            &[&item.id.to_string(), "clicked", "<0>", "0"],
        )?;
        Ok(())
    }

    /// Call `com.canonical.dbusmenu.<method>` on the menu with gdbus-formatted `args`.
    fn call(&self, desktop: &Desktop, method: &str, args: &[&str]) -> anyhow::Result<String> {
        let method = format!("com.canonical.dbusmenu.{method}");
        let mut command = vec![
            "call",
            "--dest",
            &self.bus_name,
            "--object-path",
            &self.menu_path,
            "--method",
            &method,
            "--",
        ];
        command.extend_from_slice(args);
        desktop.gdbus(&command)
    }
}

/// The object path under which `bus_name` exports `org.kde.StatusNotifierItem`. Some tray hosts
/// record only the bus name, so walk the object tree as a panel would.
fn find_item_path(desktop: &Desktop, bus_name: &str) -> anyhow::Result<String> {
    let tree = desktop.gdbus(&[
        "introspect",
        "--dest",
        bus_name,
        "--object-path",
        "/",
        "--recurse",
        "--only-properties",
    ])?;
    item_path_in_tree(&tree)
        .ok_or_else(|| anyhow::anyhow!("{bus_name} exports no StatusNotifierItem"))
}

/// In `gdbus introspect --recurse` text, the node that carries the item interface.
fn item_path_in_tree(tree: &str) -> Option<String> {
    let mut current_node = None;
    for line in tree.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("node ") {
            current_node = rest.strip_suffix(" {").map(str::to_owned);
        } else if line == "interface org.kde.StatusNotifierItem {" {
            return current_node;
        }
    }
    None
}

/// Entries of a `GetLayout` answer in gdbus's text form; the root (id 0) is left out.
fn parse_layout(layout: &str) -> Vec<TrayItem> {
    LAYOUT_ITEM
        .captures_iter(layout)
        .filter_map(|c| {
            let id: i32 = c[1].parse().ok()?;
            if id == 0 {
                return None;
            }
            let props = &c[2];
            let label = LABEL
                .captures(props)
                .and_then(|l| l.get(1).or(l.get(2)))
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default();
            Some(TrayItem {
                id,
                label,
                enabled: !props.contains("'enabled': <false>"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_item_node_in_an_introspection_tree() {
        let tree = "node / {\n  node /org/ayatana/NotificationItem/tray_icon_hearth {\n    interface org.kde.StatusNotifierItem {\n    };\n    node /org/ayatana/NotificationItem/tray_icon_hearth/Menu {\n      interface com.canonical.dbusmenu {\n";
        assert_eq!(
            item_path_in_tree(tree).as_deref(),
            Some("/org/ayatana/NotificationItem/tray_icon_hearth")
        );
        assert_eq!(item_path_in_tree("node / {\n"), None);
    }

    #[test]
    fn parses_gdbus_layout_text() {
        let text = "(uint32 7, (0, {'children-display': <'submenu'>}, [<(1, {'enabled': <false>, 'label': <'Hearth: Running'>}, @av [])>, <(2, {'type': <'separator'>}, @av [])>, <(3, {'label': <'Pause'>}, @av [])>, <(4, {'label': <\"Open Hearth's window\">}, @av [])>]))";
        let items = parse_layout(text);
        assert_eq!(
            items,
            vec![
                TrayItem {
                    id: 1,
                    label: "Hearth: Running".into(),
                    enabled: false
                },
                TrayItem {
                    id: 2,
                    label: String::new(),
                    enabled: true
                },
                TrayItem {
                    id: 3,
                    label: "Pause".into(),
                    enabled: true
                },
                TrayItem {
                    id: 4,
                    label: "Open Hearth's window".into(),
                    enabled: true
                },
            ]
        );
    }
}
