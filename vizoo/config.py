"""Run configurations for `train.py`: `--config FILE` (JSON or YAML), `config.json` and `command.txt`.

A config file holds the command line's options by name (`latent_dim` or
`latent-dim`); flags given on the command line override it. Every run writes
`config.json` (which `--config` reads back) and `command.txt` (the equivalent
command line, every option explicit) into its output directory, so either
re-runs the same training.
"""

import argparse
import json
import os
import shlex

CONFIG_FILE = "config.json"
COMMAND_FILE = "command.txt"
# Options that do not change what is trained: a run may resume with other values.
# Options about this invocation, not the training: left out of config.json and command.txt (re-running
# them must resume an interrupted run, not discard it).
NOT_SAVED = frozenset({"config", "restart", "plots_only"})
RESUMABLE_CHANGES = frozenset(
    {
        "epochs", "verbose", "eval_k", "eval_reverse_samples", "tensorboard", "config", "out_dir", "restart",
        "plots_only", "peer_timeout", "jit_compile", "cluster", "slurm_port",
    }
)


def read_config_file(path):
    """The options in a JSON or YAML (`.yaml`/`.yml`, needs PyYAML) file, as a dict.

    Raises:
        ValueError: naming `config` when the file is missing, unreadable, not a
            mapping, or YAML without PyYAML installed.
    """
    try:
        with open(path) as f:
            text = f.read()
    except OSError as error:
        raise ValueError(f"config must be a readable file ({error.strerror or error}). Received: config={path!r}") from None
    if str(path).endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ValueError(
                f"config is a YAML file, which needs PyYAML (pip install pyyaml); JSON needs nothing. "
                f"Received: config={path!r}"
            ) from None
        try:
            options = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"config is not valid YAML ({str(error).splitlines()[0]}). Received: config={path!r}") from None
    else:
        try:
            options = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config is not valid JSON ({error}). Received: config={path!r}") from None
    if not isinstance(options, dict):
        raise ValueError(f"config must hold a mapping of option names to values. Received: config={path!r}")
    return options


def _option_actions(parser):
    return {action.dest: action for action in parser._actions if action.option_strings and action.dest != "help"}


def _type_name(action):
    if isinstance(action, argparse._StoreTrueAction):
        return "a boolean (true or false)"
    kind = {int: "an integer", float: "a number", None: "a string", str: "a string"}.get(
        action.type, getattr(action.type, "__name__", str(action.type))
    )
    if action.nargs in ("+", "*"):
        plural = {int: "integers", float: "numbers", None: "strings", str: "strings"}.get(action.type, kind)
        return f"a list of {plural}" + (" (at least one)" if action.nargs == "+" else "")
    return kind


def _convert_one(action, value):
    """One value with the flag's type, or raise TypeError (argparse's own conversion of a config value)."""
    if action.type is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        if isinstance(value, float):
            if not value.is_integer():
                raise TypeError
            return int(value)
        return int(value)  # a string as the command line would give it
    if action.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError
        return float(value)
    if action.type in (None, str):
        if not isinstance(value, str):
            raise TypeError
        return value
    if isinstance(value, bool):
        raise TypeError
    return action.type(value)


def convert_option(action, key, value):
    """`value` of config key `key` converted and checked with the type of its flag (`action`), as argparse would.

    Switches (`store_true` flags) take only booleans (JSON `true`/`false`, YAML booleans): the string "false"
    is refused, not read as true. Integers refuse 2.7 and booleans; numbers take integers; list options (nargs)
    take a list and check each element. null is accepted where the flag's default is null (not given).

    Raises:
        ValueError: one line naming the key, the value and the type expected.
    """
    if value is None and action.default is None:
        return None
    try:
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if action.nargs in ("+", "*"):
            if not isinstance(value, list) or (action.nargs == "+" and not value):
                raise TypeError
            return [_convert_one(action, element) for element in value]
        return _convert_one(action, value)
    except (TypeError, ValueError):
        raise ValueError(
            f"config option {key!r} must be {_type_name(action)}, not {type(value).__name__}. "
            f"Received: {key}={value!r}"
        ) from None


def parse_args(parser, argv=None):
    """Parse `argv` with the options of `--config FILE` (if given) as defaults, so flags override the file.

    Every option of the file is converted and checked with its flag's type (`convert_option`).

    Raises:
        ValueError: naming the file (unreadable, unknown option) or the key and value of a mistyped option.
    """
    args = parser.parse_args(argv)
    if not getattr(args, "config", None):
        return args
    options = read_config_file(args.config)
    actions = _option_actions(parser)
    defaults = {}
    for key, value in options.items():
        dest = str(key).replace("-", "_")
        if dest not in actions or dest == "config":
            raise ValueError(
                f"config has an unknown option {key!r}; options are {sorted(set(actions) - {'config'})}. "
                f"Received: config={args.config!r}"
            )
        defaults[dest] = convert_option(actions[dest], key, value)
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def command_line(parser, args, program="python train.py"):
    """The command line that gives `args` with every option explicit (for `command.txt`)."""
    words = shlex.split(program)
    for dest, action in _option_actions(parser).items():
        value = getattr(args, dest, None)
        if dest in NOT_SAVED or value is None:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if value:
                words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag] + [str(v) for v in value]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def write_run_config(parser, args, out_dir):
    """Write `config.json` (the options; `--config` reads it) and `command.txt` into `out_dir`."""
    from vizoo.callbacks import _write_text_atomically

    options = {key: value for key, value in vars(args).items() if key not in NOT_SAVED}
    # (Atomic: a kill mid-write would leave a config that check_resumable cannot read.)
    _write_text_atomically(os.path.join(out_dir, CONFIG_FILE), json.dumps(options, indent=2))
    _write_text_atomically(os.path.join(out_dir, COMMAND_FILE), command_line(parser, args) + "\n")


def check_resumable(args, out_dir):
    """Raise ValueError if `out_dir/config.json` describes another training than `args` (resuming it would mix them)."""
    path = os.path.join(out_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} cannot be read ({error}), so whether this command continues the run in {out_dir} cannot be "
            "checked: delete that directory to start over, or restore the file. "
            f"Received: out_dir={out_dir!r}"
        ) from None
    current = vars(args)
    changed = [
        key for key in sorted(set(saved) & set(current))  # an option added since is not a change
        if key not in RESUMABLE_CHANGES and saved[key] != current[key]
    ]
    if changed:
        details = ", ".join(f"{key}={saved.get(key)!r} before, {current.get(key)!r} now" for key in changed)
        raise ValueError(
            f"out_dir holds an interrupted run with other options ({details}): resume it with the same options "
            f"(its {COMMAND_FILE} has them), use another out_dir, or pass --restart to discard its checkpoint. "
            f"Received: out_dir={out_dir!r}"
        )
