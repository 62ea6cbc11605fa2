/**
 * A small live dashboard: polls `/stats` once a second and renders the workers (when there are),
 * listeners (HTTP ones with their requests, rate, 4xx and 5xx), upstream servers (each with its
 * rate of requests or connections per second) and the tunnel; rates come from the change in a
 * `total` between polls. No build step, no external assets.
 * When the admin token is set, the page asks for it once and keeps it in sessionStorage.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zipline</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.5rem}
table{border-collapse:collapse;min-width:40rem}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.up{color:#080}.down,.unhealthy{color:#b00}.probing{color:#a60}code{background:#f4f4f4;padding:0 .2rem}
</style></head><body>
<h1>zipline <span id="meta"></span></h1>
<p>Links: <a href="/stats">/stats</a> · <a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p>
<div id="out">loading…</div>
<script>
const esc=(s)=>String(s).replace(/[&<>"]/g,(c)=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
let last=null;
async function tick(){
  const headers={};const t=sessionStorage.getItem('zl-token');if(t)headers.authorization='Bearer '+t;
  const r=await fetch('/stats',{headers});
  if(r.status===401){const v=prompt('admin token');if(v){sessionStorage.setItem('zl-token',v)}return}
  const s=await r.json();
  const now=Date.now(),prev=last,totals={};last={at:now,totals};
  const rate=(key,total)=>{totals[key]=total;const p=prev===null?undefined:prev.totals[key];return p===undefined?'':((total-p)*1000/(now-prev.at)).toFixed(1)};
  document.getElementById('meta').textContent='v'+s.version+' · pid '+s.pid+' · up '+s.uptime_s+'s · generation '+s.generation+(s.draining?' · DRAINING':'');
  let h='';
  if(s.workers){
    h+='<h2>Workers</h2><table><tr><th>index</th><th>pid</th><th>state</th><th>uptime s</th><th>restarts</th><th>last exit</th></tr>';
    for(const w of s.workers)h+='<tr><td>'+esc(w.index)+'</td><td>'+esc(w.pid??'')+'</td><td class="'+(w.state==='running'?'up':'down')+'">'+esc(w.state)+'</td><td>'+esc(w.uptime_s)+'</td><td>'+esc(w.restarts)+'</td><td>'+esc(w.last_exit??'')+'</td></tr>';
    h+='</table>';
  }
  h+='<h2>Listeners</h2><table><tr><th>name</th><th>protocol</th><th>address</th><th>upstream</th><th>active</th><th>requests</th><th>per s</th><th>4xx</th><th>5xx</th></tr>';
  for(const [n,l] of Object.entries(s.listeners)){
    const to=[l.upstream,l.routes>1?l.routes+' routes':''].filter(Boolean).join(' · ');
    const q=l.requests;
    const req=q?'<td>'+q.total+'</td><td class="rate">'+rate('listener '+n,q.total)+'</td><td>'+q['4xx']+'</td><td class="'+(q['5xx']>0?'down':'')+'">'+q['5xx']+'</td>':'<td></td><td></td><td></td><td></td>';
    h+='<tr><td>'+esc(n)+'</td><td>'+esc(l.protocol)+'</td><td><code>'+esc(l.address)+'</code></td><td>'+esc(to)+'</td><td>'+esc(l.active??l.sessions??'')+'</td>'+req+'</tr>';
  }
  h+='</table>';
  for(const [n,u] of Object.entries(s.upstreams)){
    h+='<h2>Upstream '+esc(n)+' <small>('+esc(u.balance)+', '+u.active+' active)</small></h2><table><tr><th>server</th><th>address</th><th>state</th><th>active</th><th>total</th><th>per s</th><th>failures</th><th>latency ms</th></tr>';
    for(const e of u.servers)h+='<tr><td>'+esc(e.server)+(e.backup?' <small>(backup)</small>':'')+'</td><td><code>'+esc(e.address)+'</code></td><td class="'+esc(e.state)+'">'+esc(e.state)+'</td><td>'+e.active+'</td><td>'+e.total+'</td><td class="rate">'+rate(n+' '+e.server,e.total)+'</td><td>'+e.failures+'</td><td>'+e.ewma_latency_ms+'</td></tr>';
    h+='</table>';
  }
  const tn=s.tunnel;
  if(tn&&tn.agent){
    h+='<h2>Tunnel agent <small>(preferred '+esc(tn.agent.preferred??'none')+')</small></h2><table><tr><th>relay</th><th>state</th><th>rtt ms</th><th>load</th><th>score</th><th>streams</th><th>bytes in / out</th><th>zstd ratio</th><th>last error</th><th>engine</th></tr>';
    const rr=(tn.agent.retired_relays??[]).map(r=>Object.assign({},r,{state:'retiring'}));
    for(const r of tn.agent.relays.concat(rr))h+='<tr><td><code>'+esc(r.address)+'</code></td><td class="'+(r.state==='up'?'up':r.state==='retiring'?'':'down')+'">'+esc(r.state)+'</td><td>'+esc(r.rtt_ms??'')+'</td><td>'+esc(r.load)+'</td><td>'+esc(r.score??'')+'</td><td>'+r.streams+'</td><td>'+r.bytes_in+' / '+r.bytes_out+'</td><td>'+esc(r.compression_ratio??'')+'</td><td>'+esc(r.last_error??'')+'</td><td>'+esc(r.engine??'')+'</td></tr>';
    h+='</table>';
    const en=Object.entries(tn.agent.entries??{}),uf=tn.agent.udp_forwards??[],re=tn.agent.retired_entries??[];
    if(en.length+uf.length+re.length>0){
      h+='<h3>Agent entries</h3><table><tr><th>entry</th><th>address</th><th>active</th><th>total</th><th>per s</th></tr>';
      for(const [k,e] of en)h+='<tr><td>'+esc(k)+'</td><td><code>'+esc(e.address)+'</code></td><td>'+e.active+'</td><td>'+e.total+'</td><td class="rate">'+rate('entry '+k,e.total)+'</td></tr>';
      uf.forEach((f,i)=>{h+='<tr><td>udp forward '+i+'</td><td><code>'+esc(f.address)+'</code></td><td>'+esc(f.sessions)+' sessions</td><td></td><td></td></tr>';});
      for(const e of re)h+='<tr><td>'+esc(e.name)+' <small>(retiring)</small></td><td></td><td>'+e.active+'</td><td></td><td></td></tr>';
      h+='</table>';
    }
  }
  if(tn&&tn.relay){
    h+='<h2>Tunnel relay <small>'+esc(tn.relay.address)+(tn.relay.tls&&tn.relay.tls.fingerprint?' · '+esc(tn.relay.tls.fingerprint):'')+'</small></h2><table><tr><th>agent</th><th>source</th><th>state</th><th>rtt ms</th><th>streams</th><th>bytes in / out</th><th>compression</th><th>engine</th></tr>';
    for(const x of tn.relay.sessions)h+='<tr><td>'+esc(x.agent)+'</td><td><code>'+esc(x.source)+'</code></td><td class="'+(x.state==='up'?'up':'down')+'">'+esc(x.state)+'</td><td>'+esc(x.rtt_ms??'')+'</td><td>'+x.streams+'</td><td>'+x.bytes_in+' / '+x.bytes_out+'</td><td>'+esc(x.compression)+'</td><td>'+esc(x.engine??'')+'</td></tr>';
    h+='</table>';
  }
  document.getElementById('out').innerHTML=h;
}
tick();setInterval(()=>tick().catch(()=>{}),1000);
</script></body></html>
`;
