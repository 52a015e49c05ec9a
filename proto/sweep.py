import sys, json, time, math, dataclasses, itertools
import torch, torch.nn.functional as F
from reference_impl.workbook.capstone import CapstoneConfig, CapstoneForCausalLM
import reference_impl.workbook.capstone_experiment as E
dev = "cuda" if torch.cuda.is_available() else "cpu"

def batch(task, B, T, g, k, V):
    if task == "recall":  # k pairs (key, value) in the first T-k positions, then the k keys again; label = value
        NK = 8; Vv = V - NK
        x = torch.randint(0, Vv, (B, T), generator=g)
        y = torch.full_like(x, -100)
        for b in range(B):
            keys = torch.randperm(NK, generator=g)[:k] + Vv
            # k non-overlapping slots of 2 in [0, T-k)
            nslots = (T - k) // 2
            slots = torch.randperm(nslots, generator=g)[:k] * 2
            vals = x[b, slots + 1]
            x[b, slots] = keys
            order = torch.randperm(k, generator=g)
            x[b, T - k:] = keys[order]
            y[b, T - k:] = vals[order]
        return x, y
    if task == "kback":
        x = torch.randint(0, V, (B, T), generator=g); y = torch.full_like(x, -100); y[:, k:] = x[:, :-k]; return x, y
    if task == "kvar":  # command token at 0 says k in 1..8; content 0..V-9
        kk = torch.randint(1, 9, (B,), generator=g)
        x = torch.randint(0, V - 8, (B, T), generator=g); x[:, 0] = V - 8 + kk - 1
        y = torch.full_like(x, -100)
        idx = torch.arange(T)[None, :] - kk[:, None]
        ok = idx >= 1
        y[ok] = x[torch.arange(B)[:, None].expand(B, T)[ok], idx[ok]]
        return x, y

def run(task, k, theta, L0, steps, lr, seed=0, V=32, C=64, I=128, nl=2, bs=32):
    cfg = CapstoneConfig(vocab_size=V, hidden_size=C, intermediate_size=I, num_hidden_layers=nl, max_position_embeddings=L0,
                         rope_parameters={"rope_type": "default", "rope_theta": theta})
    torch.manual_seed(seed)
    m = CapstoneForCausalLM(cfg).to(dev)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = 50
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s+1)/warm if s < warm else 0.5*(1+math.cos(math.pi*(s-warm)/(steps-warm))))
    t0 = time.time()
    for s in range(steps):
        x, y = batch(task, bs, L0, g, k, V); x, y = x.to(dev), y.to(dev)
        loss = F.cross_entropy(m(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sched.step()
    m.eval()
    E.TRAINED_LENGTH = L0
    res = {}
    for rule in E.RULES:
        row = []
        for mult in (1, 2, 4, 8):
            x, y = batch(task, 16, mult * L0, torch.Generator().manual_seed(99 + mult), k, V)
            mm = CapstoneForCausalLM(dataclasses.replace(cfg, **dict(zip(("rope_parameters", "max_position_embeddings"), E.rope_parameters_for(rule, mult, L0, theta))))).to(dev)
            mm.load_state_dict(m.state_dict()); mm.eval()
            with torch.no_grad():
                lg = mm(x.to(dev)); keep = y.to(dev) != -100
                row.append(round((lg.argmax(-1)[keep] == y.to(dev)[keep]).float().mean().item(), 3))
        res[rule] = row
    print(json.dumps(dict(task=task, k=k, theta=theta, L0=L0, steps=steps, lr=lr, seed=seed, final_loss=round(loss.item(), 4), secs=round(time.time()-t0,1), res=res)), flush=True)

if __name__ == "__main__":
    if sys.argv[1] == "quick":
        run("recall", 4, 100.0, 32, 100, 3e-3); sys.exit()
    a = sys.argv
    run(a[2], int(a[3]), float(a[4]), int(a[5]), int(a[1]), float(a[6]))
