"""No import circle in the tree (issue 18): every ``import`` statement of the project's packages,
at module level or inside a function (a deferred import is how a circle used to hide), points one way.

Services are found by name only where a component is *configured* to load them (nameko's runner, the
topology's ``SERVICE_CLASSES`` via importlib); those are not import statements and not followed."""
import ast
import os

from stack.stack import ROOT

PACKAGES = ("common", "services", "gateway")


def modules():
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[module.removesuffix(".__init__")] = path
    return found


def imports_of(path, known):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name in known:
                targets.add(name)
    return targets


def test_the_import_graph_has_no_circle():
    known = modules()
    graph = {module: imports_of(path, known) - {module} for module, path in known.items()}
    for module in graph:  # a package's __init__ is imported with each of its modules
        parent = module.rpartition(".")[0]
        if parent in graph and parent != module:
            graph[module].discard(parent)
    state, circles = {}, []

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == [], "\n".join(" -> ".join(circle) for circle in circles)
