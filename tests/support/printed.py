"""What a user copies from a playbook's output in the terminal."""

from __future__ import annotations


def printed_targets(output: str, task: str = "Show the targets") -> str:
    """The lines a user selects in the terminal: in that task's output, from the `targets` line
    to the end of its value (deeper-indented lines, and in JSON the closing brace)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"TASK [{task}]"))
    first = next(i for i in range(start, len(lines)) if lines[i].strip() in ("targets:", '"targets": {'))
    indent = len(lines[first]) - len(lines[first].lstrip())
    block = [lines[first]]
    for line in lines[first + 1:]:
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth > indent:
            block.append(line)
            continue
        if line.strip() == "}" and depth == indent:
            block.append(line)
        break
    return "\n".join(block) + "\n"
