import os.path as osp

from setuptools import find_packages, setup


def get_version():
    ns = {}
    with open(osp.join(osp.dirname(__file__), 'mmseg_ovseg', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def parse_requirements(path='requirements.txt'):
    reqs = []
    with open(osp.join(osp.dirname(__file__), path)) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line and line != 'pytest':
                reqs.append(line)
    return reqs


# Optional ecosystem tools: `pip install -e .[vis,export]`.
EXTRAS = {
    # TensorBoard logging (mmengine's TensorboardVisBackend) and mmseg's
    # tools/analysis_tools/analyze_logs.py (seaborn)
    'vis': ['tensorboard', 'seaborn'],
    # tools/webui.py, the web page for open-vocabulary inference; tested with gradio 6.31.0,
    # which caps Pillow below 13 (the dev venv keeps Pillow 13: gradio installed --no-deps)
    'web': ['gradio>=6.0,<7'],
    # ONNX export and runtime checks
    'export': ['onnx', 'onnxruntime'],
}
EXTRAS['all'] = sorted({pkg for pkgs in EXTRAS.values() for pkg in pkgs})


setup(
    name='mmseg-ovseg',
    version=get_version(),
    description='Open-vocabulary and CLIP/ViT segmentation (SAN, ZegCLIP, DenseCLIP, SegViT, '
    'ReSTR) as an MMSegmentation 1.x plugin',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'configs', 'tools', 'docs')),
    package_data={'mmseg_ovseg': ['clip/vocabularies/*.txt', 'clip/model_configs/*.json']},
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=parse_requirements(),
    extras_require=EXTRAS,
    license='Apache License 2.0',
    zip_safe=False,
)
