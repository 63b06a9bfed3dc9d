"""One script for the checks that need an accelerator (run it where one is lent).

    python tools/analysis_tools/device_check.py [--device cuda|cpu] [--official-root DIR]
        [--batch 64] [--skip-demo]

1. Each family's backbone (all its attention modules) on the device against the plain oracle
   on the CPU, fp32 (max abs difference), and under autocast (bf16, and fp16 on CUDA): outputs
   finite, max difference relative to the output scale.
2. The demo classification training through ``tools/train.py`` (with ``--amp`` on CUDA; on the
   CPU mmengine's AMP wrapper refuses, so it trains in fp32 there).
3. Training-step img/s and peak memory (forward + backward + SGD step, batch ``--batch`` at
   224) of RMT-S and GroupMixFormer-S, and, with ``--official-root`` (a folder holding the
   official repositories ``qhfan+RMT`` and ``AILab-CVC+GroupMixFormer`` and, on its
   ``PYTHONPATH``, timm and einops), of the official models beside them.

Everything prints figures; nothing is asserted except that each part ran.
"""
import argparse
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

def check_backbones(device):
    from mmvit_ext.models.families import families
    from mmvit_ext.oracles import oracle_for, randomize_
    dtypes = [torch.bfloat16] + ([torch.float16] if device.type == 'cuda' else [])
    print(f'1. backbones on {device} vs the CPU oracles (input 2x3x64x80)')
    for family in families():  # each family's tiny arch has all its attention forms
        model = randomize_(family.backbone(family.tiny_arch, out_indices=(0, 1, 2, 3))).eval()
        oracle = oracle_for(model).eval()
        x = torch.randn(2, 3, 64, 80)
        with torch.no_grad():
            refs = oracle(x)
            model = model.to(device)
            outs = model(x.to(device))
            fp32 = max((o.cpu() - r).abs().max().item() for o, r in zip(outs, refs))
            line = f'   {family.backbone.__name__:16s} fp32 max|diff| {fp32:.2e}'
            for dtype in dtypes:
                with torch.autocast(device.type, dtype=dtype):
                    low = model(x.to(device))
                finite = all(torch.isfinite(o).all().item() for o in low)
                rel = max(((o.float().cpu() - r).abs().max() / r.abs().max()).item()
                          for o, r in zip(low, refs))
                line += f' | {str(dtype)[6:]} finite {finite}, max|diff|/max|ref| {rel:.2e}'
        print(line)


def demo_training(device):
    print('2. demo classification training through tools/train.py')
    with tempfile.TemporaryDirectory() as root:
        env = dict(os.environ, PYTHONPATH=REPO)
        subprocess.run([sys.executable, osp.join(REPO, 'tools/generate_demo_data.py'), '--out',
                        osp.join(root, 'data/demo')], cwd=root, env=env, check=True,
                       capture_output=True)
        cmd = [sys.executable, osp.join(REPO, 'tools/train.py'),
               osp.join(REPO, 'configs/demo/rmt-nano_1xb32_demo-cls.py'), '--work-dir',
               osp.join(root, 'work')]
        if device.type == 'cuda':
            cmd.append('--amp')
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        top1 = [line for line in proc.stdout.splitlines() if 'accuracy/top1' in line]
        print(f'   {" ".join(cmd[2:3])} {"--amp" if "--amp" in cmd else "(fp32)"}: exit '
              f'{proc.returncode} in {seconds:.0f} s; last: {top1[-1].strip() if top1 else "-"}')
        if proc.returncode:
            print(proc.stderr[-3000:])


def _official_models(root):
    sys.path.insert(0, osp.join(root, 'qhfan+RMT', 'classfication_release'))
    sys.path.insert(0, osp.join(root, 'AILab-CVC+GroupMixFormer'))
    import RMT as official_rmt
    from models.groupmixformer import GroupMixFormer
    return {
        'RMT-S': lambda: official_rmt.RMT_S(None),
        'GroupMixFormer-S': lambda: GroupMixFormer(
            patch_size=3, in_dim=3, num_stages=4, num_classes=1000,
            embedding_dims=[80, 160, 320, 320], serial_depths=[2, 4, 12, 4], num_heads=8,
            mlp_ratios=[4, 4, 4, 4], drop_path_rate=0.2),
    }


def training_steps(device, batch, official_root, repeat=5, size=224):
    from mmvit_ext.utils.config import build_from_config, load_config
    print(f'3. training steps, batch {batch} at {size}, fp32 on {device}')
    configs = {'RMT-S': 'configs/rmt/rmt-s_8xb128_in1k.py',
               'GroupMixFormer-S': 'configs/groupmixformer/groupmixformer-s_8xb128_in1k.py'}
    officials = _official_models(official_root) if official_root else {}
    x = torch.randn(batch, 3, size, size, device=device)
    target = torch.randint(0, 1000, (batch, ), device=device)
    for name, config in configs.items():
        ours = build_from_config(load_config(osp.join(REPO, config)), training=True)
        models = {'ours': (ours, lambda m, x: m(x, mode='tensor'))}
        if name in officials:
            models['official'] = (officials[name](), lambda m, x: m(x))
        results = {}
        for key, (model, call) in models.items():
            model = model.to(device).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

            def step():
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(call(model, x), target).backward()
                optimizer.step()
                if device.type == 'cuda':
                    torch.cuda.synchronize()

            step()
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda'
                    else float('nan'))
            results[key] = (batch / statistics.median(times), peak)
            model.cpu()
        line = '   ' + f'{name:16s} ' + ' | '.join(
            f'{k}: {ips:.1f} img/s, peak {peak:.0f} MB' for k, (ips, peak) in results.items())
        if 'official' in results:
            line += f' | ours vs official {results["ours"][0] / results["official"][0]:.2f}x'
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--official-root', help='folder with the official repositories')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--skip-demo', action='store_true')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no CUDA device is available.')
    print(f'torch {torch.__version__}, device {device}' +
          (f' ({torch.cuda.get_device_name()})' if device.type == 'cuda' else ''))
    check_backbones(device)
    if not args.skip_demo:
        demo_training(device)
    training_steps(device, args.batch, args.official_root, args.repeat)


if __name__ == '__main__':
    main()
