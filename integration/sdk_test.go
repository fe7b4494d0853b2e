package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cerbai/cerbai/integration/fake"
)

// sdkScript uses the official OpenAI Node SDK exactly as an application
// would, with cerbai as its base URL and a proxy key as its API key: one
// plain completion, one streamed, and a listing of models.
const sdkScript = `import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY,
  maxRetries: 0 });
const messages = [{ role: "user", content: "hello from the sdk" }];
const plain = await client.chat.completions.create({ model: "m", messages });
console.log("plain:" + plain.choices[0].message.content);
const stream = await client.chat.completions.create({ model: "m", messages, stream: true });
let text = "", chunks = 0;
for await (const chunk of stream) {
  chunks++;
  text += chunk.choices[0]?.delta?.content ?? "";
}
console.log("stream:" + text);
console.log("chunks:" + chunks);
try {
  await new OpenAI({ baseURL: process.env.BASE_URL, apiKey: "wrong", maxRetries: 0 })
    .chat.completions.create({ model: "m", messages });
  console.log("wrong-key:accepted");
} catch (e) {
  console.log("wrong-key:" + e.status + ":" + e.code);
}
`

// TestSDK_OpenAINodeThroughCerbai runs the official OpenAI Node SDK
// against the real binary. CERBAI_SDK_DIR names a folder holding
// node_modules/openai (.ci/run installs it there); without it the test
// skips, unless CERBAI_REQUIRE_SDK is set.
func TestSDK_OpenAINodeThroughCerbai(t *testing.T) {
	dir := os.Getenv("CERBAI_SDK_DIR")
	node, err := exec.LookPath("node")
	if dir == "" || err != nil {
		if os.Getenv("CERBAI_REQUIRE_SDK") != "" {
			t.Fatalf("CERBAI_REQUIRE_SDK is set but node (%v) or CERBAI_SDK_DIR (%q) is "+
				"missing", err, dir)
		}
		t.Skip("set CERBAI_SDK_DIR to a folder with node_modules/openai (npm install " +
			"openai) and put node on PATH to run the OpenAI SDK test")
	}
	f := newFixture(t, fake.TokenServerOptions{}, fake.LLMOptions{Events: 4})
	p := startCerbai(t, nil, f.args()...)

	// The script lives beside node_modules so that "openai" resolves.
	script := filepath.Join(dir, "cerbai-sdk-"+strings.ReplaceAll(t.Name(), "/", "-")+".mjs")
	if err := os.WriteFile(script, []byte(sdkScript), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(script) })
	cmd := exec.Command(node, script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BASE_URL="+p.base+"/v1", "API_KEY="+proxyKey)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	for _, want := range []string{
		"plain:hello from the sdk\n",
		"stream:hello from the sdk\n",
		"wrong-key:401:unauthorized\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("SDK output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "chunks:0\n") || strings.Contains(string(out), "chunks:1\n") {
		t.Errorf("the stream arrived in fewer than 2 chunks:\n%s", out)
	}
}
