"""PyTorch peer of model/benches/gemm.rs: torch.mm GFLOP/s on the same shapes (row-major operands).
usage: python model/benches/gemm_peer.py [THREADS]"""
import time, torch, sys
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
shapes = [(64,1024,576),(128,1024,1152),(256,1024,2304),(512,1024,4608),(64,576,1024),(512,4608,1024),(4160,1152,384),(4160,1536,384),(4160,384,1536),(64,2048,2048),(1024,1024,1024)]
for m,n,k in shapes:
    a=torch.ones(m,k); b=torch.ones(k,n); c=torch.mm(a,b)
    reps=0; t=time.perf_counter()
    while time.perf_counter()-t<0.5 or reps<3:
        torch.mm(a,b,out=c); reps+=1
    dt=(time.perf_counter()-t)/reps
    print(f"{m}x{n}x{k} {2*m*n*k/dt/1e9:.1f} GFLOP/s")
