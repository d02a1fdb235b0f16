//! Building one step of the set-up: its bash text (commands, captures, loops, here-documents)
//! and the list of its `az` commands together, so the script and the list cannot drift.

use super::{AzCommand, DefinitionFile, Step, Word};

/// Builds one step: its bash text and the list of its commands together.
pub(super) struct StepBuilder<'v> {
    title: String,
    vars: &'v [String],
    files: Vec<DefinitionFile>,
    commands: Vec<AzCommand>,
    script: String,
}

impl<'v> StepBuilder<'v> {
    pub(super) fn new(title: impl Into<String>, vars: &'v [String]) -> Self {
        Self { title: title.into(), vars, files: vec![], commands: vec![], script: String::new() }
    }

    /// `template` with `${NAME}` references to the known variables.
    pub(super) fn t(&self, template: &str) -> Word {
        let names: Vec<&str> = self.vars.iter().map(String::as_str).collect();
        Word::template(template, &names)
    }

    /// `az SUBCOMMAND --subscription "$SUBSCRIPTION_ID"`: every command names the
    /// subscription rather than relying on the CLI's default one.
    pub(super) fn az(&self, subcommand: &str) -> AzCommand {
        AzCommand::new(subcommand).arg("--subscription", self.t("${SUBSCRIPTION_ID}"))
    }

    /// [`az`](Self::az) in a resource group: `--resource-group "${GROUP}"` next, as every
    /// command but the workspace's takes it.
    pub(super) fn az_in(&self, subcommand: &str, group: &str) -> AzCommand {
        self.az(subcommand).arg("--resource-group", self.t(group))
    }

    /// Runs `cmd`; a `create` only when its resource does not exist yet (its `show` fails):
    /// `az network lb create` on an existing load balancer replaces it, frontends, rules
    /// and pools included, so a second run of the script after a partial failure would strip
    /// what the Private Link Services stand on. Nothing that exists is ever replaced.
    pub(super) fn run(&mut self, cmd: AzCommand) {
        self.run_with(cmd, Vec::new());
    }

    /// [`run`](Self::run) `cmd`, then `parts` inside the same guard: what has no `show` of
    /// its own and is made with the resource (an autoscale setting's rules, which have no
    /// names: run again, they would be added twice).
    pub(super) fn run_with(&mut self, cmd: AzCommand, parts: Vec<AzCommand>) {
        match cmd.show_of_create() {
            Some(show) => {
                let mut body = cmd.line().replace('\n', "\n  ");
                for part in &parts {
                    body.push_str("\n  ");
                    body.push_str(&part.line().replace('\n', "\n  "));
                }
                self.script.push_str(&format!(
                    "if ! {} >/dev/null 2>&1; then\n  {body}\nfi\n",
                    show.line().replace('\n', "\n  ")
                ));
                self.commands.push(show);
            }
            None => {
                assert!(parts.is_empty(), "parts need a create to go with");
                self.script.push_str(&cmd.line());
                self.script.push('\n');
            }
        }
        self.commands.push(cmd);
        self.commands.extend(parts);
    }

    /// `VAR=$(cmd)`: a derived variable from a command's output.
    pub(super) fn capture(&mut self, var: &str, cmd: AzCommand) {
        self.script.push_str(&format!("{var}=$({})\n", cmd.line()));
        self.commands.push(cmd);
    }

    /// Polls with `find` (which prints `NAME<TAB>STATUS` of `endpoint`'s connection on
    /// `pls`, or nothing yet) until the connection appears, then runs `approve` (naming
    /// `${CONNECTION}`) if it is pending; already approved is fine, any other state or no
    /// connection in time fails the script with what to do.
    pub(super) fn approve_when_it_appears(
        &mut self,
        pls: &str,
        endpoint: &str,
        find: AzCommand,
        approve: AzCommand,
    ) {
        let approve_line = approve.line().replace('\n', "\n    ");
        self.script.push_str(&format!(
            "FOUND=\"\"\n\
             for TRY in $(seq 1 \"${{APPROVAL_TRIES:-60}}\"); do\n  \
             FOUND=$({find})\n  \
             [ -n \"$FOUND\" ] && break\n  \
             sleep \"${{APPROVAL_SLEEP:-10}}\"\n\
             done\n\
             if [ -z \"$FOUND\" ]; then\n  \
             echo \"{pls}: no connection from {endpoint} yet; is the endpoint created? Run this step again later\" >&2\n  \
             exit 1\n\
             fi\n\
             IFS=$'\\t' read -r CONNECTION STATUS <<< \"$FOUND\"\n\
             case \"$STATUS\" in\n  \
             Pending)\n    \
             {approve_line} ;;\n  \
             Approved) echo \"{pls}: $CONNECTION already approved\" ;;\n  \
             *) echo \"{pls}: the connection $CONNECTION of {endpoint} is $STATUS; delete it and run the script again\" >&2\n     \
             exit 1 ;;\n\
             esac\n",
            find = find.line(),
        ));
        self.commands.push(find);
        self.commands.push(approve);
    }

    /// A JSON file written with an unquoted here-document, so the `${NAME}` references in
    /// it expand. Its literal text is ours or a validated broker name (no `$`, backquote or
    /// backslash: see `discover::plan`).
    pub(super) fn file(&mut self, name: &str, json: &serde_json::Value) {
        self.text_file(name, serde_json::to_string_pretty(json).unwrap_or_default());
    }

    /// [`file`](Self::file) for any text, under the same rule: no `$`, backquote or
    /// backslash but in the `${NAME}` references.
    pub(super) fn text_file(&mut self, name: &str, text: String) {
        let body = text.strip_suffix('\n').unwrap_or(&text);
        self.script.push_str(&format!("cat > {name} <<EOF\n{body}\nEOF\n"));
        self.files.push(DefinitionFile { name: name.into(), text });
    }

    /// Stops the script with `message` (exit 2) unless the bash `test` holds.
    pub(super) fn guard(&mut self, test: &str, message: &str) {
        self.script
            .push_str(&format!("if ! {test}; then\n  echo \"{message}\" >&2\n  exit 2\nfi\n"));
    }

    /// Stops the script (exit 2) unless the variable `var` matches the bash regular
    /// expression `regex` (anchored by the caller), saying it must be `what`.
    pub(super) fn require(&mut self, var: &str, regex: &str, what: &str) {
        self.guard(&format!("[[ ${var} =~ {regex} ]]"), &format!("{var} must be {what}"));
    }

    pub(super) fn comment(&mut self, text: &str) {
        for line in text.lines() {
            self.script.push_str(&format!("# {line}\n"));
        }
    }

    pub(super) fn done(self) -> Step {
        Step { title: self.title, files: self.files, commands: self.commands, script: self.script }
    }
}
