// English and 简体中文. English strings are the keys; a missing translation shows English.
// t('Deleted {name}', {name}) fills {placeholders} (as text: callers render with textContent).

const ZH = {
  'Sign in': '登录', 'Sign out': '退出', 'Domain': '域', 'User name': '用户名', 'Password': '密码',
  'Project': '项目', 'Overview': '概况', 'Instances': '云主机', 'Images': '镜像', 'Key Pairs': '密钥对',
  'Server Groups': '云主机组', 'API Access': 'API 访问', 'Admin': '管理员', 'Hypervisors': '虚拟机管理器',
  'All Instances': '所有云主机', 'Flavors': '实例类型', 'Projects': '项目', 'Users': '用户', 'Roles': '角色',
  'Compute': '计算', 'Identity': '身份', 'Network': '网络', 'Volumes': '卷',
  'Name': '名称', 'Image': '镜像', 'Addresses': 'IP 地址', 'Flavor': '实例类型', 'Key pair': '密钥对',
  'Status': '状态', 'Task': '任务', 'Power state': '电源状态', 'Age': '创建时长', 'Actions': '操作',
  'Filter': '筛选', 'Launch Instance': '创建云主机', 'Launch': '创建', 'Cancel': '取消', 'Next': '下一步',
  'Back': '上一步', 'Details': '详情', 'Source': '源', 'Configuration': '配置', 'Metadata': '元数据',
  'Server group': '云主机组', 'None': '无', 'Count': '数量', 'Description': '描述', 'User data': '用户数据',
  'Create': '创建', 'Import': '导入', 'Delete': '删除', 'Confirm': '确认', 'Close': '关闭', 'Refresh': '刷新',
  'Are you sure?': '确定吗？', 'Console': '控制台', 'Console log': '控制台日志', 'Action log': '操作日志',
  'Start': '启动', 'Stop': '关机', 'Reboot': '软重启', 'Hard reboot': '硬重启', 'Pause': '暂停',
  'Unpause': '恢复暂停', 'Suspend': '挂起', 'Resume': '恢复', 'Lock': '锁定', 'Unlock': '解锁',
  'Rescue': '救援', 'Unrescue': '退出救援', 'Shelve': '搁置', 'Unshelve': '取消搁置',
  'Shelve offload': '搁置卸载', 'Resize': '调整大小', 'Confirm resize': '确认调整', 'Revert resize': '还原调整',
  'Rebuild': '重建', 'Create snapshot': '创建快照', 'Rename': '重命名', 'Force delete': '强制删除',
  'Restore': '恢复删除', 'Upload Image': '上传镜像', 'Upload': '上传', 'File': '文件', 'Disk format': '磁盘格式',
  'Container format': '容器格式', 'Visibility': '可见性', 'Size': '大小', 'Created': '创建时间',
  'Properties': '属性', 'Launch from image': '从镜像创建', 'Fingerprint': '指纹', 'Type': '类型',
  'Create Key Pair': '创建密钥对', 'Import Key Pair': '导入密钥对', 'Public key': '公钥',
  'Private key downloaded': '私钥已下载', 'Policy': '策略', 'Members': '成员',
  'Create Server Group': '创建云主机组', 'Limit summary': '配额概况', 'Used {used} of {max}': '已用 {used} / {max}',
  'Cores': 'CPU 核', 'RAM': '内存', 'Key pairs': '密钥对', 'Server groups': '云主机组',
  'Download clouds.yaml': '下载 clouds.yaml', 'Download OpenRC file': '下载 OpenRC 文件',
  'Service': '服务', 'Endpoint': '端点', 'Host': '主机', 'vCPUs': 'vCPU', 'Disk': '磁盘',
  'Running VMs': '运行中的虚拟机', 'Enabled': '已启用', 'Public': '公有', 'Create Flavor': '创建实例类型',
  'Your session expires in {min} min.': '会话将在 {min} 分钟后过期。', 'Sign in again': '重新登录',
  'Your session has expired. Sign in again.': '会话已过期，请重新登录。',
  'Not authorized': '无权访问', 'This page is for administrators.': '此页面仅对管理员开放。',
  'Loading…': '加载中…', 'Nothing here yet.': '暂无内容。', 'Error': '错误', 'Dark mode': '深色模式',
  'Language': '语言', 'Menu': '菜单', 'Skip to content': '跳到正文', 'Fits': '可用',
  'Exceeds quota': '超出配额', 'Too small for the image': '对该镜像而言太小', 'Generate': '生成',
  'Keyboard shortcuts': '键盘快捷键', 'Type here; keys go to the guest.': '在此输入；按键发送给客户机。',
  'Connected': '已连接', 'Disconnected': '已断开', 'Connect': '连接', 'Request': '请求', 'Time': '时间',
  'Uploaded {pct}%': '已上传 {pct}%', 'Active': '运行中', 'Private': '私有', 'Shared': '共享',
  'Community': '社区', 'Owner': '所有者', 'ID': 'ID', 'Add': '添加', 'Key': '键', 'Value': '值',
  'Instance name': '云主机名称', 'Choose an image': '选择镜像', 'Choose a flavor': '选择实例类型',
  'Saved': '已保存', 'Edit': '编辑', 'Interfaces': '网络接口', 'Signed in as {user}': '当前用户 {user}',
  'New name': '新名称', 'Snapshot name': '快照名称', 'Hypervisor usage': '虚拟机管理器使用情况',
  'Role assignments': '角色分配', 'Domain ID': '域 ID', 'Min disk (GB)': '最小磁盘 (GB)',
  'Min RAM (MB)': '最小内存 (MB)', 'Navigation': '导航',
};

const LANGS = { en: 'English', 'zh-CN': '简体中文' };
let lang = localStorage.getItem('yunhe.lang') || ((navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh-CN' : 'en');

export function languages() { return LANGS; }
export function language() { return lang; }
export function setLanguage(l) {
  lang = LANGS[l] ? l : 'en';
  localStorage.setItem('yunhe.lang', lang);
  document.documentElement.lang = lang;
}
document.documentElement.lang = lang;

export function t(key, vars) {
  let s = (lang === 'zh-CN' && ZH[key]) || key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}
