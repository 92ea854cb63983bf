"""MCP tool results as the model reads them (tools/servers/mcp_remote.py)."""

import mcp_types as types
from mcp.shared.exceptions import MCPError

from tools.servers.mcp_remote import result_from_mcp, result_from_mcp_error


def test_text_blocks_are_joined_and_other_blocks_named_not_inlined():
    result = result_from_mcp(types.CallToolResult(content=[
        types.TextContent(text="first"),
        types.ImageContent(data="iVBORw0KGgo=", mime_type="image/png"),
        types.ResourceLink(name="report", uri="https://files.example/report.pdf"),
        types.TextContent(text="last"),
    ]))
    assert result.content == ("first\n[image: image/png, not shown]\n"
                              "[resource link https://files.example/report.pdf]\nlast")
    assert "iVBORw0KGgo" not in result.content and not result.is_error


def test_structured_content_alone_becomes_its_json_text():
    result = result_from_mcp(types.CallToolResult(content=[], structured_content={"sum": 3}))
    assert (result.content, result.structured) == ('{"sum": 3}', {"sum": 3})


def test_is_error_is_a_tool_error_the_model_reads():
    result = result_from_mcp(types.CallToolResult(content=[types.TextContent(text="no such repo")], is_error=True))
    assert (result.is_error, result.error_code, result.content) == (True, "tool_error", "no such repo")


def test_a_protocol_error_keeps_its_code_and_drops_the_servers_message():
    result = result_from_mcp_error("gh__search", MCPError(-32602, "bad input at /srv/app/secrets.py line 3"))
    assert result.content == "The tool 'gh__search' refused the arguments (MCP error -32602)."
    assert result.error_code == "tool_error"
