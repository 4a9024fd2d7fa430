"""Import a script under ``tools/`` (not a package) as a module, for tests."""
import importlib.util
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(name: str):
    """``load_tool('analysis_tools/get_flops')`` or ``load_tool('model_converters/san2ovseg')``.

    The script's own folder goes on ``sys.path`` first, as when it is run, so that sibling
    imports (``san2ovseg`` imports ``mmseg_san2ovseg``) resolve.
    """
    path = osp.join(REPO, 'tools', f'{name}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'no such tool: {path}')
    folder = osp.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location('tool_' + name.replace('/', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
