/** Renders the admin dashboard as a browser would: the page's own script, run against `/stats`. */
import vm from 'node:vm';

export async function renderDashboard(admin: string): Promise<string> {
  const html = await (await fetch(admin)).text();
  const script = html.slice(html.indexOf('<script>') + 8, html.lastIndexOf('</script>'));
  const stats = await (await fetch(`${admin}stats`)).json();
  const els: Record<string, { innerHTML: string; textContent: string }> = {
    out: { innerHTML: '', textContent: '' },
    meta: { innerHTML: '', textContent: '' },
  };
  const sandbox = {
    document: { getElementById: (id: string) => els[id] },
    sessionStorage: { getItem: () => null },
    fetch: async () => ({ status: 200, json: async () => stats }),
    setInterval: () => 0,
    prompt: () => null,
    done: null as Promise<void> | null,
  };
  vm.createContext(sandbox);
  vm.runInContext(script.replace('tick();setInterval', 'done=tick();setInterval'), sandbox);
  await sandbox.done;
  return els.out?.innerHTML ?? '';
}
